#!/usr/bin/env python3
"""Writes fms-acceleration.json from a foundation-model-stack/fms-acceleration checkout: the single-GPU Mistral-7B
rows of scripts/benchmarks/refs/a100_80gb.csv without an acceleration framework (full fine-tuning and LoRA).
Provenance only: the JSON is committed and the bench/tests read it (python3 extract-fms-acceleration.py GIT_DIR).
The run settings are the benchmark's own: scripts/benchmarks/defaults.yaml (gradient_checkpointing, use_flash_attn,
no accumulation), benchmark.py defaults (packing True, max_seq_len 4096), scenarios.yaml (dtype, LoRA r/targets/dropout)."""
import csv, io, json, subprocess, sys

git_dir = sys.argv[1]
def git(*args): return subprocess.run(["git", "--git-dir", git_dir, *args], check=True, capture_output=True, text=True).stdout
commit = git("rev-parse", "HEAD").strip()
path = "scripts/benchmarks/refs/a100_80gb.csv"
pk = {l.split("==")[0]: l.split("==")[1] for l in git("show", f"HEAD:scripts/benchmarks/refs/requirements.txt").split() if "==" in l}
cases = []
for row in csv.DictReader(io.StringIO(git("show", f"HEAD:{path}"))):
    if row["model_name_or_path"] != "mistralai/Mistral-7B-v0.1" or row["num_gpus"] != "1" or row["framework_config"] != "none":
        continue
    if not row["mem_peak_torch_mem_alloc_in_bytes"]:
        continue
    assert row["torch_dtype"] == "bfloat16" and row["bf16"] == "" and row["fp16"] == ""  # pure bf16, no AMP
    lora = row["peft_method"] == "lora"
    b = int(row["per_device_train_batch_size"])
    plan = {"model": "mistral-7b", "dtype": "bf16", "adapter_dtype": "fp32", "pure_16bit": True, "optimizer": "adamw",
            "batch": b, "seq": 4096, "checkpointing": True, "attention": "flash", "loss": "full", "compile": False}
    if lora:
        plan.update(method="lora", rank=int(row["r"]), targets=",".join(sorted(row["target_modules"].split())),
                    lora_dropout=float(row["lora_dropout"]))
    else:
        plan["method"] = "full"
    name = f"{'lora-r' + row['r'] + '-qkvo' if lora else 'full'}-b{b}"
    common = {
        "source": {"repo": "foundation-model-stack/fms-acceleration", "commit": commit, "path": path,
                   "url": f"https://github.com/foundation-model-stack/fms-acceleration/blob/{commit}/{path}"},
        "hardware": "NVIDIA A100 80GB",
        "software": f"torch {pk['torch']}, transformers {pk['transformers']}, peft {pk['peft']}, trl {pk['trl']}, flash-attn {pk['flash-attn']}",
    }
    cases.append({"id": f"fms-acceleration/mistral-7b-{name}-allocated", **common,
                  "measured": "mem_peak_torch_mem_alloc_in_bytes", "measured_bytes": int(float(row["mem_peak_torch_mem_alloc_in_bytes"])),
                  "plan": {**plan, "memory": "allocated"}})
    cases.append({"id": f"fms-acceleration/mistral-7b-{name}-nvidia", **common,
                  "measured": "mem_nvidia_mem_reserved (MiB)", "measured_bytes": int(float(row["mem_nvidia_mem_reserved"])) * 2**20,
                  "plan": {**plan, "memory": "device"}})
doc = {
    "about": ("foundation-model-stack/fms-acceleration benchmark references (A100 80GB), HF Trainer via fms-hf-tuning: "
              "Mistral-7B in bf16 without AMP, sequences packed to 4096 tokens (benchmark.py: packing_matrix [True], "
              "max_seq_len_matrix [4096]), gradient checkpointing and flash attention (defaults.yaml), per-device batch "
              "4 or 8 with no accumulation, torch AdamW. mem_peak_torch_mem_alloc_in_bytes is HF Trainer's "
              "torch.cuda.max_memory_allocated bookkeeping over init + train (README 'Calculating Memory from HFTrainer "
              "Output Metrics'); mem_nvidia_mem_reserved is nvidia-smi memory.used at its peak minus its first reading, "
              "sampled every second by a separate process (so it includes the CUDA context and can miss a short peak)."),
    "cases": cases,
}
json.dump(doc, sys.stdout, indent=2)
print()
