#!/usr/bin/env bash
# Peak memory of `peft quantize` on a random ~220M-parameter Llama-shaped fp32 checkpoint.
# Bound: output size + largest single tensor in fp32 + a fixed runtime overhead (OVERHEAD_MIB, default 320 MiB:
# .NET runtime + JIT + libtorch CPU, about what quantising the 80k-parameter test model peaks at, plus margin).
# Prints peak RSS (from /usr/bin/time -v), the bound and the tiny-model baseline.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
work="${WORK:-$(mktemp -d)}"
overhead_mib="${OVERHEAD_MIB:-320}"
trap '[ -z "${KEEP:-}" ] && rm -rf "$work"' EXIT
build_bench
gen=$(bench make-model --out "$work/model" --hidden "${HIDDEN:-1024}" --intermediate "${INTER:-2816}" --layers "${LAYERS:-12}" --heads 16 --vocab "${VOCAB:-32000}")
echo "generated: $gen ($(du -b "$work/model/model.safetensors" | cut -f1) bytes)"
peak_kib() { grep 'Maximum resident set size' "$1" | awk '{print $NF}'; }
/usr/bin/time -v -o "$work/tiny.time" dotnet "$bench_bin/peft.dll" quantize \
  --model "$root/tests/PeftSharp.Tests/Fixtures/tiny-llama" --out "$work/tiny-q" >/dev/null
/usr/bin/time -v -o "$work/big.time" dotnet "$bench_bin/peft.dll" quantize \
  --model "$work/model" --out "$work/q"
out_bytes=$(du -b "$work/q/model.safetensors" | cut -f1)
python3 - "$gen" "$out_bytes" "$(peak_kib "$work/big.time")" "$(peak_kib "$work/tiny.time")" "$overhead_mib" <<'PY'
import json, sys
gen, out, peak_kib, tiny_kib, over_mib = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
mib = lambda b: b / 2**20
largest = gen["largest_tensor_fp32_bytes"]
bound = out + largest + over_mib * 2**20
peak = peak_kib * 1024
print(f"params {gen['params']:,}; output {mib(out):.1f} MiB; largest tensor fp32 {mib(largest):.1f} MiB; overhead {over_mib} MiB "
      f"(tiny-model run peaks at {mib(tiny_kib*1024):.1f} MiB)")
print(f"peak RSS {mib(peak):.1f} MiB vs bound {mib(bound):.1f} MiB -> {'OK' if peak <= bound else 'OVER'} (ratio {peak/bound:.2f})")
sys.exit(0 if peak <= bound else 1)
PY
