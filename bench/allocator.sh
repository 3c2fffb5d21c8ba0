#!/usr/bin/env bash
# Which allocator under libtorch's CPU tensors, on the LoRA step (lora-step bench, one fresh process per run): `peft
# train`'s (the buffer cache over glibc's fixed 128 KiB mmap threshold, PeftSharp/Native/TensorAllocator), the threshold
# alone (PEFTSHARP_TENSOR_CACHE=0: `peft train` before the cache) and glibc's default heap (--allocator glibc), ROUNDS
# (default 3) alternated rounds. Prints each run's tokens/s and peak resident set (VmHWM) and the median ratios.
# STEPS / WARMUP (default 5 / 2); extra arguments go to every run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
build_bench
args=("${lora_step_shape[@]}" --steps "${STEPS:-5}" --warmup "${WARMUP:-2}" --threads "${THREADS:-2}" "$@")
rss="$(mktemp)"; trap 'rm -f "$rss"' EXIT
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A tps
for ((i = 0; i < ${ROUNDS:-3}; i++)); do
  for side in cache threshold glibc; do
    case $side in
      cache) out="$(/usr/bin/time -f %M -o "$rss" dotnet "$bench_bin/PeftSharp.Bench.dll" lora-step "${args[@]}" | tail -n 1)";;
      threshold) out="$(PEFTSHARP_TENSOR_CACHE=0 /usr/bin/time -f %M -o "$rss" dotnet "$bench_bin/PeftSharp.Bench.dll" lora-step "${args[@]}" | tail -n 1)";;
      glibc) out="$(/usr/bin/time -f %M -o "$rss" dotnet "$bench_bin/PeftSharp.Bench.dll" lora-step "${args[@]}" --allocator glibc | tail -n 1)";;
    esac
    tps[$side]+="$(jq -r .tokens_per_s <<<"$out") "
    echo "round $((i + 1)) $side: $(jq -r .tokens_per_s <<<"$out") tok/s, VmHWM $(($(tail -n 1 "$rss") / 1024)) MiB; $(jq -r .allocator <<<"$out")$(jq -r 'if .cache then "; " + .cache else "" end' <<<"$out")"
  done
done
python3 - "${tps[cache]}" "${tps[threshold]}" "${tps[glibc]}" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import statistics, sys
cache, threshold, glibc = ([float(x) for x in a.split()] for a in sys.argv[1:4])
ratio = lambda a, b: statistics.median(x / y for x, y in zip(a, b))
print(f"median tokens/s: cache {statistics.median(cache):.1f}, threshold alone {statistics.median(threshold):.1f}, glibc default {statistics.median(glibc):.1f}")
print(f"cache/glibc-default = {ratio(cache, glibc):.3f}, cache/threshold-alone = {ratio(cache, threshold):.3f} (median of per-round ratios); load {sys.argv[4]} at the end")
PY
