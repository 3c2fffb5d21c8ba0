#!/usr/bin/env python3
"""Writes peft-metamathqa.json from a huggingface/peft checkout: the MetaMathQA method-comparison results whose method
the planner models (full fine-tuning, LoRA with plain AdamW, DoRA, prompt tuning). Provenance only: the JSON is
committed and the bench/tests read it; this script is how it was made (python3 extract-peft-metamathqa.py PEFT_GIT_DIR).
Every plan field comes from the result file's own run_info (train_config + peft_config); nothing is tuned here."""
import json, subprocess, sys

git_dir = sys.argv[1]
def git(*args): return subprocess.run(["git", "--git-dir", git_dir, *args], check=True, capture_output=True, text=True).stdout
commit = git("rev-parse", "HEAD").strip()
base = "method_comparison/MetaMathQA/results/"
wanted = [  # result file -> case id
    ("full-finetuning--llama-3.2-3B-lr_0.00001.json", "full"),
    ("lora--llama-3.2-3B-rank32.json", "lora-r32-qv"),
    ("lora--llama-3.2-3B-rank64.json", "lora-r64-qv"),
    ("lora--llama-3.2-3B-rank64-rslora.json", "lora-r64-qv-rslora"),
    ("lora--llama-3.2-3B-rank10-target-mlp.json", "lora-r10-mlp"),
    ("lora--llama-3.2-3B-rank32-dora.json", "dora-r32-qv"),
    ("prompt_tuning--llama-3.2-3B-default.json", "prompt-tuning-200"),
]
cases = []
for name, cid in wanted:
    d = json.loads(git("show", f"HEAD:{base}{name}"))
    tc, pc, ti, meta = d["run_info"]["train_config"], d["run_info"]["peft_config"] or {}, d["train_info"], d["meta_info"]
    assert tc["dtype"] == "bfloat16" and not tc["use_amp"] and tc["optimizer_type"] == "AdamW" and not tc["compile"]
    pt = pc.get("peft_type")
    plan = {
        "model": "llama-3.2-3b", "dtype": "bf16", "adapter_dtype": "fp32" if tc["autocast_adapter_dtype"] else "bf16",
        "pure_16bit": True, "optimizer": "adamw", "batch": tc["batch_size"], "seq": tc["max_seq_length"],
        "checkpointing": tc["use_gc"], "attention": "sdpa", "loss": "full", "memory": "reserved", "compile": tc["compile"],
    }
    if pt is None:
        plan["method"] = "full"
    elif pt == "LORA":
        plan.update(method="dora" if pc["use_dora"] else "lora", rank=pc["r"], targets=",".join(sorted(pc["target_modules"])))
    elif pt == "PROMPT_TUNING":
        plan.update(method="prompt-tuning", virtual_tokens=pc["num_virtual_tokens"])
    pk = meta["package_info"]
    cases.append({
        "id": f"peft-metamathqa/{cid}",
        "source": {"repo": "huggingface/peft", "commit": commit, "path": base + name,
                   "url": f"https://github.com/huggingface/peft/blob/{commit}/{base}{name}"},
        "hardware": meta["system_info"]["accelerator"],
        "software": f"torch {pk['torch-version']}, transformers {pk['transformers-version']}, peft {pk['peft-version']}",
        "measured": "accelerator_memory_reserved_99th",
        "measured_bytes": ti["accelerator_memory_reserved_99th"],
        "also_published": {"accelerator_memory_max": ti["accelerator_memory_max"], "num_trainable_params": ti["num_trainable_params"]},
        "plan": plan,
    })
doc = {
    "about": ("huggingface/peft method_comparison/MetaMathQA: Llama-3.2-3B in bf16 on one L40S, 5000 steps of batch 4, "
              "right-padded to the longest row of each batch (rows are at most max_seq_length = 768 tokens), SDPA attention "
              "(attn_implementation null), no gradient checkpointing, no AMP: torch.optim.AdamW over the trainable "
              "parameters (bf16 for full fine-tuning, fp32 adapters otherwise: autocast_adapter_dtype), loss by "
              "transformers' ForCausalLMLoss. accelerator_memory_reserved_99th is the 99th percentile of "
              "torch.cuda.memory_reserved() minus the reservation before the model loaded, sampled after every training "
              "step (run.py train(); empty_cache() every 10 steps), so it covers the training steps only: no CUDA "
              "context, no evaluation. accelerator_memory_max (max_memory_reserved over the whole run) also covers the "
              "generation-based evaluation at batch 50 and is not a training figure."),
    "cases": cases,
}
json.dump(doc, sys.stdout, indent=2)
print()
