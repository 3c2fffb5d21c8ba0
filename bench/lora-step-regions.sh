#!/usr/bin/env bash
# How the LoRA step's main thread splits between libgomp parallel regions (libtorch's threaded ops and MKL's GEMMs)
# and the serial gaps between them: `lora-step --profile` (lora-step.sh's shape) with bench/gomp_regions.c preloaded,
# the regions cut to the timed steps' window; prints regions per step, ms inside them, and histograms of region and gap
# lengths. Gaps hold everything outside libtorch's regions: the C# kernels (on their own regions, which the logger does
# not see: the attention kernel is the gaps over 3 ms), single-threaded ops, dispatch, autograd and managed code.
# STEPS / WARMUP (default 4 / 2), THREADS (2); extra flags go to lora-step. Needs a C compiler (cc).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
build_bench
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cc -O2 -shared -fPIC -o "$out/gomp_regions.so" "$root/bench/gomp_regions.c" -ldl
gomp="$(basename "$(ls "$bench_bin"/runtimes/linux-x64/native/libgomp-*.so.1 | head -n 1)")"
GOMP_REGIONS_LIB="$gomp" GOMP_REGIONS_OUT="$out/regions" LD_PRELOAD="$out/gomp_regions.so" \
  dotnet "$bench_bin/PeftSharp.Bench.dll" lora-step --profile "${lora_step_shape[@]}" --steps "${STEPS:-4}" --warmup "${WARMUP:-2}" \
  --threads "${THREADS:-2}" "$@" 2> "$out/stderr" | tee "$out/profile"
read -r start end steps < <(sed -n 's/^perf window: \([0-9.]*\) \([0-9.]*\) steps \([0-9]*\).*/\1 \2 \3/p' "$out/stderr") || true
[[ -n "${start:-}" ]] || { echo "lora-step-regions: the bench printed no window (stderr: $(tail -n 3 "$out/stderr"))" >&2; exit 1; }
python3 - "$out/regions" "$start" "$end" "$steps" <<'PY'
import sys
path, w0, w1, steps = sys.argv[1], float(sys.argv[2]) * 1e9, float(sys.argv[3]) * 1e9, int(sys.argv[4])
rows = sorted(r for r in (tuple(map(float, l.split())) for l in open(path)) if r[0] >= w0 and r[1] <= w1)
inside = sum(e - s for s, e, _ in rows)
gaps = [b[0] - a[1] for a, b in zip(rows, rows[1:])]
print(f"libgomp regions per step {len(rows) / steps:.1f}; main thread inside them {inside / steps / 1e6:.1f} ms of "
      f"{(w1 - w0) / steps / 1e6:.1f} ms per step; in the gaps between them {sum(gaps) / steps / 1e6:.1f} ms")
edges = [0, 5e3, 20e3, 50e3, 100e3, 300e3, 1e6, 3e6, float("inf")]
for name, xs in (("regions", [e - s for s, e, _ in rows]), ("gaps", gaps)):
    print(f"{name} by length (us): per step count, ms")
    for a, b in zip(edges, edges[1:]):
        sel = [x for x in xs if a <= x < b]
        print(f"  {a / 1e3:>6.0f} - {b / 1e3:<6.0f} {len(sel) / steps:7.1f} {sum(sel) / steps / 1e6:8.2f}")
PY
