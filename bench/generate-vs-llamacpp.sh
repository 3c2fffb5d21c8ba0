#!/usr/bin/env bash
# Batch-1 greedy decode tokens/s of PeftSharp's generate (the model `--model FILE.gguf` loads) beside llama.cpp's
# (LLamaSharp) on the same f32 GGUF, same threads, alternated rounds (bench gguf-generate), with PeftSharp's
# libtorch decode path (PEFTSHARP_DECODE=torch, the path before the C# batch-1 step) as a third column: a random
# ~134M Llama (h 768, 12 layers, MLP 2048, vocab 32000) exported to f32 GGUF here, and the real TinyStories-260K GGUF.
# THREADS (default 2), ROUNDS (default 3), TOKENS (default 32); PROFILE=1 adds each path's per-op profile.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
threads="${THREADS:-2}"; rounds="${ROUNDS:-3}"; tokens="${TOKENS:-32}"
tmp="${TMPDIR:-/tmp}/peftsharp-gguf-generate-bench"
build_bench
if [ ! -f "$tmp/model.gguf" ]; then
  rm -rf "$tmp" && mkdir -p "$tmp"
  bench make-model --out "$tmp/model" --hidden 768 --intermediate 2048 --layers 12 --heads 12 --vocab 32000 >/dev/null
  cp "$root/tests/PeftSharp.Tests/Fixtures/tiny-llama/tokenizer.json" "$tmp/model/"   # 260 tokens; the rest of the vocab is padding
  dotnet "$bench_bin/peft.dll" export gguf --model "$tmp/model" --out "$tmp/model.gguf" --type f32 >/dev/null
  rm -rf "$tmp/model"
fi
echo "== random ~134M Llama, f32 GGUF"
bench gguf-generate --gguf "$tmp/model.gguf" --threads "$threads" --rounds "$rounds" --tokens "$tokens" --prompt "Lily saw a bird and a dog in the park" ${PROFILE:+--profile}
stories="$root/../shared/fixtures/real/tinystories-260k/raw/stories260K.gguf"
if [ -f "$stories" ]; then
  echo "== real TinyStories-260K GGUF"
  bench gguf-generate --gguf "$stories" --threads "$threads" --rounds "$rounds" --tokens 200 ${PROFILE:+--profile}
else
  echo "(skipped TinyStories-260K: $stories not found)"
fi
