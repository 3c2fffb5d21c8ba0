#!/usr/bin/env bash
# `peft serve`'s peak resident memory at a given load vs `peft plan --serve` for the same load (serve-memory bench, one
# fresh process per configuration). A random fp32 Llama shape with GQA (h 768, 12 layers, 12 heads, 4 kv heads, MLP 2048,
# vocab 8192; ~88M params) serves BATCH concurrent greedy completions of PROMPT ids + MAX_TOKENS new tokens with
# ADAPTERS LoRA adapters (r 8, all-linear). Runs with glibc's fixed mmap threshold (as `peft serve --return-frees`; not
# train's buffer cache, see ServeCommand) and without (as `peft serve` runs by default). Bar: within 10% with
# --return-frees. A few minutes on 2 cores.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
build_bench
args=(--batch "${BATCH:-32}" --prompt "${PROMPT:-960}" --max-tokens "${MAX_TOKENS:-32}" --adapters "${ADAPTERS:-8}" --threads "${THREADS:-2}")
for mode in --return-frees ""; do
  echo "serve-memory ${args[*]} $mode" >&2
  bench serve-memory "${args[@]}" $mode | tail -1 | tee /dev/stderr | python3 -c '
import json, sys, types
r = json.loads(sys.stdin.read(), object_hook=lambda d: types.SimpleNamespace(**d)); mb = lambda b: b / 2**20
print(f"{sys.argv[1]:<22} planned {mb(r.planned):7.0f} MiB  measured {mb(r.measured):7.0f} MiB  error {100 * r.error:+5.1f}%  "
      f"(weights {mb(r.weights):.0f}, KV {mb(r.kv_cache):.0f}, adapters {mb(r.adapters_bytes):.0f}, prefill {mb(r.prefill):.0f}, runtime {mb(r.overhead):.0f}); "
      f"{r.seconds:.1f} s, {r.generated_tokens_per_s:.1f} generated tokens/s")
' "${mode:-default malloc}"
done
