#!/usr/bin/env bash
# Inference-forward throughput of a ~54M-parameter Llama-shaped model: PeftSharp (TorchSharp) vs PyTorch eager,
# same shapes and thread count, in one run. Prints both JSON lines and the ratio.
# Needs Debian's python3-torch and libopenblas0-pthread for the peer (apt-get install -y python3-torch libopenblas0-pthread).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
peer="${PEER:-$root/../shared/bench/peer_lora_step.py}"
shape=(--vocab 16384 --hidden 512 --layers 12 --heads 8 --kv-heads 8 --seq 256 --batch 4 --steps 10 --threads "${THREADS:-2}")
dotnet build "$root/bench/PeftSharp.Bench" -c Release -nologo -v quiet -clp:ErrorsOnly\;NoSummary >&2
bench() { dotnet "$root/bench/PeftSharp.Bench/bin/Release/net10.0/PeftSharp.Bench.dll" "$@"; }
ours=$(bench forward "${shape[@]}")
theirs=$(/usr/bin/python3 "$peer" --mode forward "${shape[@]}")
echo "peftsharp: $ours"
echo "pytorch:   $theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
# The peer builds its LoRA matrices even in forward mode (unused there): compare base parameters.
assert a["total_params"] == b["total_params"] - b["trainable_params"], (a["total_params"], b["total_params"])
print(f"forward tokens/s ratio peftsharp/pytorch = {a['tokens_per_s'] / b['tokens_per_s']:.3f} "
      f"({a['total_params']:,} params, {a['threads']} threads)")
PY
