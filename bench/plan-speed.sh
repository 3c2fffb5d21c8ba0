#!/usr/bin/env bash
# Wall time of `peft plan` as a user runs it (process start, JIT, planning, printing), for a few presets and
# methods, RUNS (default 5) times each; prints the median and the worst per command. The figure issue 5 asks
# for: "answers in well under a second". Uses the Release CLI that ./peft builds.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
runs="${RUNS:-5}"
"$root/peft" plan --model llama-2-7b >/dev/null   # builds artifacts/cli once
dll="$root/artifacts/cli/peft.dll"
cases=(
  "--model llama-3.1-70b --method qlora"
  "--model llama-2-7b --method full"
  "--model qwen2.5-7b --method dora --rank 32 --seq 2048"
  "--model llama-3.2-3b --compare"
  "--model mistral-7b --method lora --json"
  "--model $root/tests/PeftSharp.Tests/Fixtures/tiny-llama --method lora"
)
printf '%-64s %10s %10s\n' "peft plan ..." "median ms" "worst ms"
for c in "${cases[@]}"; do
  times=()
  for ((i = 0; i < runs; i++)); do
    t0=$(date +%s%N)
    # shellcheck disable=SC2086
    dotnet "$dll" plan $c >/dev/null
    times+=($(( ($(date +%s%N) - t0) / 1000000 )))
  done
  sorted=($(printf '%s\n' "${times[@]}" | sort -n))
  printf '%-64s %10s %10s\n' "${c/$root\//}" "${sorted[$((runs / 2))]}" "${sorted[$((runs - 1))]}"
done
