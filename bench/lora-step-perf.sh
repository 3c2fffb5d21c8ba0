#!/usr/bin/env bash
# Where the LoRA step's CPU time goes by thread and by kind of code, from perf samples of its timed steps only:
# `lora-step --profile` (lora-step.sh's shape; its section table is printed first) under `perf record`, the samples cut
# to the steps' window (the bench prints it on CLOCK_MONOTONIC, which perf is told to stamp with), then
# bench/perf_by_thread.py: ms per step of the main thread, libtorch's OpenMP worker and other threads (JIT, GC) per kind
# (MKL's GEMM micro-kernels vs its packing, the C# kernels, libtorch's elementwise loops and dispatch/autograd, malloc,
# the OS, the worker's wait in libgomp), and what each thread ran while the other waited: the 2-thread loss.
# STEPS / WARMUP (default 8 / 3), FREQ (perf's sampling rate, default 999 Hz), THREADS (2); extra flags go to lora-step.
# Needs `perf` with access to this process (perf_event_paranoid <= 2 for one's own processes).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
steps="${STEPS:-8}"
freq="${FREQ:-999}"
build_bench
out="$(mktemp -d)"
pid_file="$out/pid"
# The .NET runtime writes /tmp/perf-PID.map and perfinfo-PID.map for perf's symbol names (PerfMapEnabled=3: the map
# only, no /tmp/jit-PID.dump), removed with the run.
cleanup() { if [[ -s "$pid_file" ]]; then rm -f "/tmp/perf-$(cat "$pid_file").map" "/tmp/perfinfo-$(cat "$pid_file").map"; fi; rm -rf "$out"; }
trap cleanup EXIT
DOTNET_PerfMapEnabled=3 DOTNET_EnableWriteXorExecute=0 perf record -q -k CLOCK_MONOTONIC -F "$freq" -o "$out/perf.data" -- \
  bash -c 'echo $$ > "$0"; exec dotnet "$@"' "$pid_file" "$bench_bin/PeftSharp.Bench.dll" lora-step --profile "${lora_step_shape[@]}" \
  --steps "$steps" --warmup "${WARMUP:-3}" --threads "${THREADS:-2}" "$@" 2> "$out/stderr" | tee "$out/profile"
read -r start end < <(sed -n 's/^perf window: \([0-9.]*\) \([0-9.]*\) .*/\1 \2/p' "$out/stderr")
[[ -n "${start:-}" ]] || { echo "lora-step-perf: the bench printed no perf window (stderr: $(tail -n 3 "$out/stderr"))" >&2; exit 1; }
perf script -i "$out/perf.data" --time "$start,$end" -F pid,tid,time,ip,sym,dso 2>/dev/null |
  python3 "$(dirname "$0")/perf_by_thread.py" --freq "$freq" --steps "$steps" --seconds "$(python3 -c "print($end - $start)")"
