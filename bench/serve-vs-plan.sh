#!/usr/bin/env bash
# `peft serve`'s peak resident memory and time at a given load vs `peft plan --serve` for the same load (serve-memory
# bench, one fresh process per mode). A random fp32 Llama shape with GQA (h 768, 12 layers, 12 heads, 4 kv heads, MLP
# 2048, vocab 8192; ~88M params) serves BATCH concurrent greedy completions of PROMPT ids + MAX_TOKENS new tokens with
# ADAPTERS LoRA adapters (r 8, all-linear). MODES (default "cache threshold glibc"), each printed with the allocator
# that ran:
#   cache      `peft serve` as it runs: peft train's buffer cache (PeftSharp/Native/TensorAllocator)
#   threshold  PEFTSHARP_TENSOR_CACHE=0: glibc's fixed mmap threshold alone
#   glibc      --allocator glibc: glibc's default heap (freed blocks stay in its heaps)
#   base-cache, base-nocache    the build in BASELINE_BIN as cache / threshold run it (builds with the buffer cache,
#                               c8dee07 on)
#   base-threshold, base-glibc  the build in BASELINE_BIN before the buffer cache served (1bce6c9 and older:
#                               `--return-frees` was its threshold mode, no flag its glibc heap)
# SCORE=1: every request also scores its prompt (echo + logprobs 1, lm-evaluation-harness's call), so the measured
# peak holds a scoring prefill's logits, which the plan counts whether or not a load asks for them (the plan's
# "scoring" term; without SCORE=1 the plan is above the measured peak by whatever scoring adds over a plain prefill).
# Bar: within 10% for cache and threshold. About a minute per mode on 2 cores: run one mode per CPU lock hold.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
build_bench
args=(--batch "${BATCH:-32}" --prompt "${PROMPT:-960}" --max-tokens "${MAX_TOKENS:-32}" --adapters "${ADAPTERS:-8}" --threads "${THREADS:-2}")
[ "${SCORE:-0}" = 1 ] && args+=(--score)
echo "load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for mode in ${MODES:-cache threshold glibc}; do
  case $mode in
    cache) run=(dotnet "$bench_bin/PeftSharp.Bench.dll" serve-memory "${args[@]}");;
    threshold) run=(env PEFTSHARP_TENSOR_CACHE=0 dotnet "$bench_bin/PeftSharp.Bench.dll" serve-memory "${args[@]}");;
    glibc) run=(dotnet "$bench_bin/PeftSharp.Bench.dll" serve-memory "${args[@]}" --allocator glibc);;
    base-cache) run=(dotnet "${BASELINE_BIN:?set BASELINE_BIN}/PeftSharp.Bench.dll" serve-memory "${args[@]}");;
    base-nocache) run=(env PEFTSHARP_TENSOR_CACHE=0 dotnet "${BASELINE_BIN:?set BASELINE_BIN}/PeftSharp.Bench.dll" serve-memory "${args[@]}");;
    base-threshold) run=(dotnet "${BASELINE_BIN:?set BASELINE_BIN}/PeftSharp.Bench.dll" serve-memory "${args[@]}" --return-frees);;
    base-glibc) run=(dotnet "${BASELINE_BIN:?set BASELINE_BIN}/PeftSharp.Bench.dll" serve-memory "${args[@]}");;
    *) echo "MODES: unknown mode '$mode' (cache, threshold, glibc, base-cache, base-nocache, base-threshold, base-glibc)" >&2; exit 2;;
  esac
  echo "$mode: ${run[*]}" >&2
  "${run[@]}" | tail -1 | python3 -c '
import json, sys, types
r = json.loads(sys.stdin.read(), object_hook=lambda d: types.SimpleNamespace(**d)); mb = lambda b: b / 2**20
allocator = getattr(r, "allocator", "not printed by that build")
cache = getattr(r, "cache", None)
scoring = getattr(r, "scoring", 0)
scored = " [every request scored its prompt]" if getattr(r, "scored", False) else ""
print(f"{sys.argv[1]:<15} planned {mb(r.planned):7.0f} MiB  measured {mb(r.measured):7.0f} MiB  error {100 * r.error:+5.1f}%  "
      f"{r.seconds:.1f} s, {r.generated_tokens_per_s:.1f} generated tokens/s  "
      f"(weights {mb(r.weights):.0f}, KV {mb(r.kv_cache):.0f} + growth {mb(r.kv_growth):.0f}, "
      f"adapters {mb(r.adapters_bytes):.0f}, prefill {mb(r.prefill):.0f}, scoring {mb(scoring):.0f}, runtime {mb(r.overhead):.0f})"
      + scored)
residue = getattr(r, "rss_after_load", None)
if residue is not None: print(" " * 16 + f"resident after the load, server stopped, idle buffers given back: +{mb(residue - r.rss_after_adapters):.0f} MiB over the weights and adapters")
print(" " * 16 + f"allocator: {allocator}" + (f"; {cache}" if cache else ""))
' "$mode"
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
