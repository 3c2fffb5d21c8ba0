#!/usr/bin/env bash
# `peft serve` through the official OpenAI Node SDK (npm `openai`), as a JavaScript application calls it: models,
# completions (logprobs, echo), chat (streaming with the usage chunk, stops, seeds, logprobs, tool-call history) and
# the error classes the SDK raises (404 model_not_found, 401, 400 context_length_exceeded, 400 for tools). Serves the
# tiny-llama test fixture with its LoRA adapter. Needs node >= 18 and npm (installs `openai` into a scratch folder;
# OPENAI_NODE_VERSION pins it). Prints one line per check; exits 1 when any fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scratch="${TMPDIR:-/tmp}/peftsharp-openai-node"
if [ ! -d "$scratch/node_modules/openai" ]; then
  mkdir -p "$scratch"
  (cd "$scratch" && npm init -y >/dev/null && npm install --silent "openai@${OPENAI_NODE_VERSION:-latest}" >/dev/null)
fi
echo "openai (node) $(node -p "require('$scratch/node_modules/openai/package.json').version")"
fixture="$root/tests/PeftSharp.Tests/Fixtures/tiny-llama"
port="${PORT:-18431}"
"$root/peft" serve --model "$fixture" --adapter "lora=$fixture/adapters/lora" --port "$port" --api-key sk-node --threads 1 --log-level warning &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  curl -sf -H "Authorization: Bearer sk-node" "http://127.0.0.1:$port/v1/models" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { echo "peft serve exited" >&2; exit 1; }
  sleep 0.5
done
node "$root/bench/openai-node.cjs" "http://127.0.0.1:$port/v1" "$scratch/node_modules/openai"
