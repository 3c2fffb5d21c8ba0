#!/usr/bin/env bash
# QLoRA/LoRA step time at the 116M and the ~1B shape (issue 17 goal: <= 1.05 at both), each shape's steps alternated
# round by round in one process, with the dequantisation breakdown, CPU flags, threads and load average.
# ROUNDS (default 5 at 116M, 3 at 1B), SHAPES (default "116m 1b"); other arguments go to both runs, e.g.
# --checkpointing (both models; keeps one layer's dequantised weights for its backward) or --reuse-layers N|all.
# The ~1B shape holds ~4.4 GB fp32 + 0.7 GB NF4 in one process.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build_bench
summary=()
for s in ${SHAPES:-116m 1b}; do
  case $s in
    116m) args=(--hidden 1024 --layers 8 --vocab 8192 --batch 1 --seq 128 --rounds "${ROUNDS:-5}");;
    1b) args=(--hidden 2048 --layers 16 --intermediate 5632 --heads 16 --kv-heads 16 --vocab 32000 --batch 1 --seq 128 --rounds "${ROUNDS:-3}");;
    *) echo "SHAPES: unknown shape '$s' (116m, 1b)" >&2; exit 2;;
  esac
  echo "== $s (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  out=$(bench qlora-step "${args[@]}" --warmup 1 --no-memory "$@")
  echo "$out"
  summary+=("$s: $(grep -o 'QLoRA/LoRA step time ratio = [0-9.]*.*' <<<"$out")")
done
echo "== summary (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%s\n' "${summary[@]}"
