#!/usr/bin/env bash
# Where the QLoRA step's CPU time goes beside the LoRA step's, by thread and kind of code (bench/perf_by_thread.py),
# at qlora-step.sh's 116M shape: one `qlora-step --only nf4|fp32` process per base under `perf record`, samples cut to
# the timed steps (after WARMUP of them). STEPS (default 20), WARMUP (3), FREQ (999 Hz); extra flags go to qlora-step
# (the fp32 side packs its weights as `peft train` does under auto).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
steps="${STEPS:-20}"
warmup="${WARMUP:-3}"
freq="${FREQ:-999}"
build_bench
out="$(mktemp -d)"
trap 'rm -rf "$out" /tmp/perf-*.map /tmp/perfinfo-*.map 2>/dev/null || true' EXIT
for base in nf4 fp32; do
  echo "== $base base"
  DOTNET_PerfMapEnabled=3 DOTNET_EnableWriteXorExecute=0 perf record -q -k CLOCK_MONOTONIC -F "$freq" -o "$out/perf.data" -- \
    dotnet "$bench_bin/PeftSharp.Bench.dll" qlora-step --hidden 1024 --layers 8 --vocab 8192 --batch 1 --seq 128 \
    --only "$base" --warmup "$warmup" --rounds "$steps" --perf-window "$warmup" "$@" 2> "$out/stderr" > /dev/null
  read -r start end < <(sed -n 's/^perf window: \([0-9.]*\) \([0-9.]*\) .*/\1 \2/p' "$out/stderr")
  [[ -n "${start:-}" ]] || { echo "qlora-step-perf: no perf window (stderr: $(tail -n 3 "$out/stderr"))" >&2; exit 1; }
  perf script -i "$out/perf.data" --time "$start,$end" -F pid,tid,time,ip,sym,dso 2>/dev/null |
    python3 "$(dirname "$0")/perf_by_thread.py" --freq "$freq" --steps "$steps" --seconds "$(python3 -c "print($end - $start)")"
done
