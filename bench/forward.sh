#!/usr/bin/env bash
# Inference-forward throughput of a ~54M-parameter Llama-shaped model: PeftSharp (TorchSharp) vs PyTorch eager,
# same shapes and thread count. Runs the two alternately ROUNDS times (default 3; drift on a shared machine hits both)
# and prints each run's JSON line and the median of the per-round ratios.
# Needs Debian's python3-torch and libopenblas0-pthread for the peer (apt-get install -y python3-torch libopenblas0-pthread).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
peer="${PEER:-$root/../shared/bench/peer_lora_step.py}"
rounds="${ROUNDS:-3}"
shape=(--vocab 16384 --hidden 512 --layers 12 --heads 8 --kv-heads 8 --seq 256 --batch 4 --steps 10 --threads "${THREADS:-2}")
build_bench
runs=()
for ((i = 0; i < rounds; i++)); do
  runs+=("$(bench forward "${shape[@]}")")
  runs+=("$(/usr/bin/python3 "$peer" --mode forward "${shape[@]}")")
  echo "peftsharp: ${runs[-2]}"
  echo "pytorch:   ${runs[-1]}"
done
python3 - "${runs[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(s) for s in sys.argv[1:]]
pairs = list(zip(runs[0::2], runs[1::2]))
a, b = pairs[0]
# The peer builds its LoRA matrices even in forward mode (unused there): compare base parameters.
assert a["total_params"] == b["total_params"] - b["trainable_params"], (a["total_params"], b["total_params"])
ratios = [x["tokens_per_s"] / y["tokens_per_s"] for x, y in pairs]
print(f"forward tokens/s ratio peftsharp/pytorch = {statistics.median(ratios):.3f} "
      f"(per round: {', '.join(f'{r:.3f}' for r in ratios)}; {a['total_params']:,} params, {a['threads']} threads)")
PY
