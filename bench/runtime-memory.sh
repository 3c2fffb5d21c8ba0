#!/usr/bin/env bash
# What the CPU runtime adds to a training run, term by term (the terms of PeftSharp.Memory's CpuRuntime): one train-memory
# run on the bundled demo model (QLoRA, ~3M params, so its tensors are ~20 MB and the rest is runtime), BATCH x SEQ random
# token ids (default 16 x 12, as the demo's rows), STEPS steps (default 60: past the first gen0 collection), THREADS
# (default: libtorch's), COMPUTE (fp32 | bf16, default fp32), then the final save and one no-grad eval pass at the same batch. Prints, at each probe: resident
# set, its peak, OS threads, the .NET heap (in use, committed after the last GC, gen0 collections) and glibc's mallinfo2
# (arena bytes from the OS, in use, mmapped), then the terms as CpuRuntime defines them. 16 s on a quiet box, ~5 min on 2 busy cores.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
build_bench
threads=(); [ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
out="$(mktemp)"; trap 'rm -f "$out"' EXIT
bench train-memory --model "$root/assets/demo/base" --method qlora --seq "${SEQ:-12}" --batch "${BATCH:-16}" --steps "${STEPS:-60}" \
  --eval-batch "${BATCH:-16}" --compute-dtype "${COMPUTE:-fp32}" "${threads[@]}" | tail -1 > "$out"
python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); mb = lambda b: b / 1e6
print(f"demo model, qlora, {r['compute_dtype']}, batch {r['batch']} x {r['seq']}, {r['steps']} steps, {r['threads']} threads, {r['seconds']} s")
print(f"{'probe':<16}{'RSS':>8}{'peak':>8}{'threads':>8}{'heap':>8}{'heap commit':>12}{'gen0':>6}{'arena':>8}{'in use':>8}{'mmapped':>8}  (MB)")
for k, p in r["probes"].items():
    print(f"{k:<16}{mb(p['Rss']):>8.1f}{mb(p['Peak']):>8.1f}{p['Threads']:>8}{mb(p['ManagedHeap']):>8.1f}{mb(p['ManagedCommitted']):>12.1f}"
          f"{p['Gen0Collections']:>6}{mb(p['MallocArena']):>8.1f}{mb(p['MallocInUse']):>8.1f}{mb(p['MallocMmapped']):>8.1f}")
P = r["probes"]; m = r["measured"]; last = P["last_step"]
tensors = m["weights"] + m["gradients"] + m["optimizer"]
after_load = P["libtorch_loaded"]["Rss"]
loading = P["model_loaded"]["Rss"] - after_load - m["weights"]
heap = last["ManagedCommitted"] if last["Gen0Collections"] > 0 else last["ManagedHeap"]
arenas = last["MallocArena"] - P["model_loaded"]["MallocArena"]
growth = last["Rss"] - after_load - loading - heap - arenas - tensors
save = P["saved"]["Rss"] - last["Rss"]
note = "" if last["Gen0Collections"] else " (no gen0 collection yet: raise STEPS)"
print(f"terms: after load {mb(after_load):.1f}, loading {mb(loading):.1f}, .NET heap {mb(heap):.1f}{note}, arenas {mb(arenas):.1f}, "
      f"growth {mb(growth):.1f}, save {mb(save):.1f}")
p = r["predicted"]
print(f"plan {mb(p['total']):.1f} MB (runtime allowance {mb(p['runtime']):.1f}) vs whole-run peak {mb(m['peak']):.1f} MB: "
      f"{(p['total'] - m['peak']) / m['peak'] * 100:+.1f}%")
PY
