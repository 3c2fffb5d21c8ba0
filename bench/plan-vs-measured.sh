#!/usr/bin/env bash
# Predicted (the plan `peft train` prints) vs measured peak resident memory of the project's own Trainer on CPU.
# Each configuration runs in a fresh process (`train-memory` bench) so VmHWM is that run's peak. The model is a
# random ~134M-parameter Llama shape (vocab 32000, h 768, MLP 2048, 12 layers), written once by `make-model`.
# Measured = VmHWM of the whole run, final checkpoint and artefact save included (what `peft train` compares its plan
# with; the plan's runtime allowance covers the save); 'steps' = VmHWM when the last step had finished, for reference.
# HIDDEN/INTER/LAYERS/HEADS/KV_HEADS/VOCAB change the shape; TYPE=gemma2 writes a Gemma 2 (soft-capped attention scores
# and logits, GeGLU, tied head; SOFTCAP / FINAL_SOFTCAP = 0 switch either cap off) or TYPE=qwen3 (q/k norms; HEAD_DIM sets
# a query width other than the hidden size) instead of a Llama. Planned by the same RunPlan, so a head_dim the attention kernel does
# not take (HIDDEN=320 HEADS=4: 80) or Gemma's explicit scores show up as error here when the planner misses them.
# THREADS=N sets libtorch's threads (0: its default), which is also QLoRA's dequantisation team.
# COMPUTE=bf16 trains with a bf16 base (fp32 adapters), as `peft train --compute-dtype bf16`.
# CONFIGS overrides the list: "method:seq:batch[:ckpt][:padded][:varied][:stepsN]" entries separated by spaces; varied =
# rows of seq/2..seq tokens (each step pads to its own longest, so sizes change between steps, as with real data);
# stepsN runs N steps for that entry (STEPS, default 3, for the others).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
work="${WORK:-$(mktemp -d)}"
trap '[ -z "${KEEP:-}" ] && [ -z "${WORK:-}" ] && rm -rf "$work"' EXIT
build_bench
if [ ! -f "$work/model/model.safetensors" ]; then
  bench make-model --out "$work/model" --hidden "${HIDDEN:-768}" --intermediate "${INTER:-2048}" --layers "${LAYERS:-12}" \
    --heads "${HEADS:-12}" --kv-heads "${KV_HEADS:-${HEADS:-12}}" --vocab "${VOCAB:-32000}" --type "${TYPE:-llama}" \
    --softcap "${SOFTCAP:-50}" --final-softcap "${FINAL_SOFTCAP:-30}" ${HEAD_DIM:+--head-dim "$HEAD_DIM"} >&2
  cp "$root/tests/PeftSharp.Tests/Fixtures/tiny-llama/tokenizer.json" "$work/model/" # full fine-tuning saves a copy
fi
configs="${CONFIGS:-qlora:128:2 qlora:512:1 qlora:512:1:ckpt lora:128:2 lora:512:1 lora:256:2:padded lora:256:4:varied:steps12 full:128:2 full:512:1 full:64:4:varied:steps12}"
start=$SECONDS
: > "$work/results.jsonl"
for c in $configs; do
  IFS=: read -r method seq batch f1 f2 f3 <<< "$c"
  flags=()
  steps="${STEPS:-3}"
  for f in $f1 $f2 $f3; do case "$f" in ckpt) flags+=(--checkpointing);; padded) flags+=(--padded);; varied) flags+=(--varied);; steps*) steps="${f#steps}";; esac; done
  echo "running $c" >&2
  bench train-memory --model "$work/model" --method "$method" --seq "$seq" --batch "$batch" --steps "$steps" --compute-dtype "${COMPUTE:-fp32}" --threads "${THREADS:-0}" "${flags[@]}" \
    | tail -1 >> "$work/results.jsonl"
done
python3 - "$work/results.jsonl" "$((SECONDS - start))" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
mb = lambda b: b / 1e6
print(f"{'config':<34}{'predicted MB':>13}{'measured MB':>12}{'error':>8}{'steps MB':>9}{'error':>8}   measured runtime / weights+grads+optim / rest   predicted acts+logits+dequant / runtime allowance")
worst = 0
for r in rows:
    p, m = r["predicted"], r["measured"]
    name = f"{r['method']} b{r['batch']} s{r['seq']}" + (" ckpt" if r["checkpointing"] else "") + (" padded" if r["padded"] else "") + (f" varied {r['steps']} steps" if r.get("varied") else "")
    # The plan describes the whole run (its runtime allowance includes the end-of-run save): compare with the run's peak.
    err = (p["total"] - m["peak"]) / m["peak"] * 100
    err_steps = (p["total"] - m["training_peak"]) / m["training_peak"] * 100
    worst = max(worst, abs(err))
    fixed = m["weights"] + m["gradients"] + m["optimizer"]
    rest = m["peak"] - fixed - m["runtime"]
    print(f"{name:<34}{mb(p['total']):>13.0f}{mb(m['peak']):>12.0f}{err:>+7.1f}%{mb(m['training_peak']):>9.0f}{err_steps:>+7.1f}%   {mb(m['runtime']):.0f} / {mb(fixed):.0f} / {mb(rest):.0f}"
          f"   {mb(p['activations'] + p['logits'] + p['dequant']):.0f} / {mb(p['runtime']):.0f}")
print(f"worst |error| {worst:.1f}% over {len(rows)} runs; bench took {sys.argv[2]} s")
sys.exit(0 if worst <= 10 else 1)
PY
