#!/usr/bin/env bash
# bf16 mixed precision (`train --compute-dtype bf16`: bf16 base and activations, fp32 adapters, AdamW state and loss):
# 1. the bf16-step bench: the LoRA step (lora-step's default shape) in bf16 vs fp32 on the same weights, alternated in one
#    run, with the CPU's bf16 flags, the thread count and the 256^3 matmul ratio `--compute-dtype auto` decides on;
# 2. the demo (`peft train`, QLoRA) for STEPS steps in fp32 and in bf16: both final losses (mean of the last 10 steps)
#    and their relative difference (goal: within 2%).
# Extra arguments go to the bf16-step bench (e.g. --rounds 5 --steps 3). THREADS (default 2), STEPS (default 100).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
threads="${THREADS:-2}"
steps="${STEPS:-100}"
build_bench
bench bf16-step --threads "$threads" "$@"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for dtype in fp32 bf16; do
  (cd "$root" && dotnet "$bench_bin/peft.dll" train --steps "$steps" --compute-dtype "$dtype" --threads "$threads" --out "$tmp/$dtype" >"$tmp/$dtype.log" 2>&1) \
    || { cat "$tmp/$dtype.log" >&2; exit 1; }
done
python3 - "$tmp" "$steps" <<'PY'
import json, sys
tmp, steps = sys.argv[1], int(sys.argv[2])
def losses(d):
    return [r["loss"] for r in map(json.loads, open(f"{tmp}/{d}/metrics.jsonl")) if "loss" in r]
def speed(d):
    return sorted(r["tokens_per_s"] for r in map(json.loads, open(f"{tmp}/{d}/metrics.jsonl")) if "tokens_per_s" in r)
f, b = losses("fp32"), losses("bf16")
mf, mb = sum(f[-10:]) / len(f[-10:]), sum(b[-10:]) / len(b[-10:])
print(f"demo (peft train, QLoRA, {steps} steps): final loss fp32 {f[-1]:.4f}, bf16 {b[-1]:.4f}; "
      f"mean of the last 10 steps fp32 {mf:.4f}, bf16 {mb:.4f}: bf16/fp32 - 1 = {mb / mf - 1:+.2%} (goal within 2%)")
sf, sb = speed("fp32"), speed("bf16")
print(f"demo step tokens/s (median, not alternated; the demo model is tiny, hidden 256): fp32 {sf[len(sf)//2]:.0f}, bf16 {sb[len(sb)//2]:.0f}")
PY
