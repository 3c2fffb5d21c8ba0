#!/usr/bin/env bash
# LoRA training-step throughput: PeftSharp vs PyTorch eager (peer_lora_step.py --mode train), same shapes, targets,
# rank and threads. Runs the two alternately ROUNDS times (drift on a shared machine hits both) and prints the median
# ratio of tokens/s, and each side's FLOP utilisation against its own 2048^3 fp32 matmul throughput (ours timed after
# every step in-process; the peer's in a python process right after each peer run).
# Extra arguments go to both sides (e.g. --targets q_proj,k_proj,v_proj,o_proj --r 16).
# Needs Debian's python3-torch and libopenblas0-pthread for the peer.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
peer="${PEER:-$root/../shared/bench/peer_lora_step.py}"
rounds="${ROUNDS:-3}"
args=(--vocab 4096 --hidden 512 --layers 4 --heads 8 --kv-heads 8 --seq 256 --batch 4 --r 8 --alpha 16
      --targets q_proj,v_proj --steps 5 --warmup 2 --threads "${THREADS:-2}" "$@")
build_bench
mm='import sys, time, statistics, torch
torch.set_num_threads(int(sys.argv[1])); a, b = torch.randn(2048, 2048), torch.randn(2048, 2048); a @ b; ts = []
for _ in range(5):
    t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
print(2 * 2048 ** 3 / statistics.median(ts) / 1e9)'
ours=() theirs=() peer_mm=()
for ((i = 0; i < rounds; i++)); do
  ours+=("$(bench lora-step "${args[@]}")")
  theirs+=("$(/usr/bin/python3 "$peer" --mode train "${args[@]}")")
  peer_mm+=("$(/usr/bin/python3 -c "$mm" "${THREADS:-2}")")
  echo "round $((i + 1)): peftsharp $(jq -r .tokens_per_s <<<"${ours[-1]}") tok/s, pytorch $(jq -r .tokens_per_s <<<"${theirs[-1]}") tok/s" >&2
done
python3 - "$(IFS=,; echo "${peer_mm[*]}")" "${ours[@]}" "${theirs[@]}" <<'PY'
import json, statistics, sys
peer_mm = [float(x) for x in sys.argv[1].split(",")]; runs = [json.loads(s) for s in sys.argv[2:]]; n = len(runs) // 2
ours, theirs = runs[:n], runs[n:]
assert ours[0]["total_params"] == theirs[0]["total_params"] and ours[0]["trainable_params"] == theirs[0]["trainable_params"]
ratios = [o["tokens_per_s"] / t["tokens_per_s"] for o, t in zip(ours, theirs)]
o, med = ours[0], statistics.median
gflop, tokens = o["step_gflop"], o["tokens_per_step"]
ours_tps, peer_tps = med(x["tokens_per_s"] for x in ours), med(t["tokens_per_s"] for t in theirs)
print(f"FLOPs: {o['flop_formula']}")
print(f"step = {gflop} GFLOP for {tokens} tokens; {o['total_params']:,} params, {o['trainable_params']:,} trainable, {o['threads']} threads, {n} alternating rounds")
print(f"peftsharp: median {ours_tps:.1f} tok/s = {gflop * ours_tps / tokens:.1f} GFLOP/s; 2048^3 fp32 matmul {med(x['matmul_gflops'] for x in ours):.1f} GFLOP/s; "
      f"utilisation {med(x['utilisation'] for x in ours):.1%} (median per step)")
peer_util = [gflop * t["tokens_per_s"] / tokens / m for t, m in zip(theirs, peer_mm)]
print(f"pytorch:   median {peer_tps:.1f} tok/s = {gflop * peer_tps / tokens:.1f} GFLOP/s; 2048^3 fp32 matmul {med(peer_mm):.1f} GFLOP/s; "
      f"utilisation {med(peer_util):.1%} (median per round)")
print(f"LoRA step tokens/s ratio peftsharp/pytorch = {med(ratios):.3f} (per round: {', '.join(f'{r:.3f}' for r in ratios)})")
PY
