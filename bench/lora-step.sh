#!/usr/bin/env bash
# LoRA training-step throughput: PeftSharp vs PyTorch eager (peer_lora_step.py --mode train) vs the same step written
# naively on TorchSharp (../shared/bench/naive_lora_step: plain nn.functional calls on libtorch 2.10, the bar an
# engine must beat), same shapes, targets, rank and threads. Runs the three alternately ROUNDS times (drift on a shared
# machine hits all alike) and prints the median ratios of tokens/s, each side's FLOP utilisation against a 2048^3
# fp32 matmul (ours timed after every step in-process; the peer's in a python process right after each peer run),
# and each process's peak resident set (VmHWM, from /usr/bin/time's maxrss: model build + warmup + steps).
# BASELINE_BIN=<folder with another build's PeftSharp.Bench.dll> adds a fourth column (e.g. the previous commit, built
# from `git archive` into /tmp) and prints ours/baseline from the same alternated rounds: before/after figures.
# A fourth side, "peftsharp-stock-mkl", is ours with PEFTSHARP_MKL_INTEL_PATH=0: MKL's generic code path for non-Intel
# CPUs, the one every plain libtorch process (the naive step's too) runs on AMD. It shows what Kernels/MklCodePath buys,
# and its in-process matmul is the stock-libtorch denominator: the naive step's utilisation and ours against stock.
# Ours runs `peft train`'s allocator (the buffer cache of PeftSharp/Native, the resident set at the live tensors' peak);
# "peftsharp-glibc-heap" is ours with `--allocator glibc`, the heap the naive step, the peer and an older baseline build
# run on: peftsharp-glibc-heap/torchsharp-naive compares the engines alone, peftsharp/peftsharp-glibc-heap prices the cache.
# PROFILE=1 also prints one `lora-step --profile` run (where the step's time goes).
# STEPS / WARMUP (default 5 / 2) set the timed and untimed steps per run (fewer keep a loaded box's run short).
# Extra arguments go to all sides (e.g. --targets q_proj,k_proj,v_proj,o_proj --r 16).
# Needs Debian's python3-torch and libopenblas0-pthread for the peer; the naive step is built into
# ${NAIVE_DIR:-/tmp/peftsharp-naive-lora-step} (a copy: ../shared is read-only), not into the repo.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
peer="${PEER:-$root/../shared/bench/peer_lora_step.py}"
naive_src="${NAIVE_SRC:-$root/../shared/bench/naive_lora_step}"
naive_dir="${NAIVE_DIR:-/tmp/peftsharp-naive-lora-step}"
rounds="${ROUNDS:-3}"
threads="${THREADS:-2}"
args=("${lora_step_shape[@]}" --steps "${STEPS:-5}" --warmup "${WARMUP:-2}" --threads "$threads" "$@")
build_bench
naive_dll="$naive_dir/bin/Release/net10.0/naive_lora_step.dll"
if [[ ! -f "$naive_dll" || "$naive_src/Program.cs" -nt "$naive_dll" ]]; then
  mkdir -p "$naive_dir" && cp "$naive_src"/{Program.cs,naive_lora_step.csproj,weakver.py} "$naive_dir/"
  dotnet build "$naive_dir" -c Release -nologo -v quiet -clp:ErrorsOnly\;NoSummary >&2
  # Debian 12's libstdc++ lacks GLIBCXX_3.4.32; the project's build weakens that one need the same way.
  python3 "$naive_dir/weakver.py" "$naive_dir/bin/Release/net10.0/runtimes/linux-x64/native/libLibTorchSharp.so" GLIBCXX_3.4.32 >/dev/null
fi
mm='import sys, time, statistics, torch
torch.set_num_threads(int(sys.argv[1])); a, b = torch.randn(2048, 2048), torch.randn(2048, 2048); a @ b; ts = []
for _ in range(5):
    t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
print(2 * 2048 ** 3 / statistics.median(ts) / 1e9)'
rss="$(mktemp)"; trap 'rm -f "$rss"' EXIT
# Runs a command, prints its stdout's last line with "peak_rss_kib" (the process's VmHWM) added.
measured() { local out; out="$(/usr/bin/time -f %M -o "$rss" "$@" | tail -n 1)"; jq -c --argjson k "$(tail -n 1 "$rss")" '. + {peak_rss_kib: $k}' <<<"$out"; }
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
ours=() theirs=() naive=() peer_mm=() baseline=() stock=() heap=()
for ((i = 0; i < rounds; i++)); do
  ours+=("$(measured dotnet "$bench_bin/PeftSharp.Bench.dll" lora-step "${args[@]}")")
  # Right after ours: its utilisation is taken against ours' in-process matmul (the same libtorch) of this round.
  stock+=("$(PEFTSHARP_MKL_INTEL_PATH=0 measured dotnet "$bench_bin/PeftSharp.Bench.dll" lora-step "${args[@]}")")
  # The naive step runs with the same runtime setting as ours (the peft and bench projects set TieredPGO false: its
  # background re-JIT took ~30 ms of CPU per step from the two cores), so the ratio measures the engines, not the JIT.
  # Likewise the tier-up knobs both projects set (tier-up after 2 calls, no delay).
  naive+=("$(DOTNET_TieredPGO=0 DOTNET_TC_CallCountThreshold=2 DOTNET_TC_CallCountingDelayMs=0 measured dotnet "$naive_dll" --mode train "${args[@]}")")
  # Ours on glibc's default heap, the allocator the naive step, the peer and an older baseline build run on: the
  # engines compared alone. Ours above runs `peft train`'s buffer cache (PeftSharp/Native), which keeps the resident set
  # at the live tensors' peak for the memory plan and costs some speed against the heap (bench/allocator.sh).
  heap+=("$(measured dotnet "$bench_bin/PeftSharp.Bench.dll" lora-step "${args[@]}" --allocator glibc)")
  theirs+=("$(measured /usr/bin/python3 "$peer" --mode train "${args[@]}")")
  peer_mm+=("$(/usr/bin/python3 -c "$mm" "$threads")")
  if [[ -n "${BASELINE_BIN:-}" ]]; then baseline+=("$(measured dotnet "$BASELINE_BIN/PeftSharp.Bench.dll" lora-step "${args[@]}")"); fi
  echo "round $((i + 1)): peftsharp $(jq -r .tokens_per_s <<<"${ours[-1]}") tok/s, pytorch $(jq -r .tokens_per_s <<<"${theirs[-1]}"), torchsharp-naive $(jq -r .tokens_per_s <<<"${naive[-1]}"), peftsharp-stock-mkl $(jq -r .tokens_per_s <<<"${stock[-1]}"), peftsharp-glibc-heap $(jq -r .tokens_per_s <<<"${heap[-1]}")" >&2
done
flags="$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_bf16|avx512_vnni|amx_bf16|amx_tile)$' | paste -sd, -)"
python3 - "$(IFS=,; echo "${peer_mm[*]}")" "$flags" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)" "$rounds" "${ours[@]}" "${theirs[@]}" "${naive[@]}" "${stock[@]}" "${heap[@]}" ${baseline[@]+"${baseline[@]}"} <<'PY'
import json, statistics, sys
peer_mm = [float(x) for x in sys.argv[1].split(",")]; flags, cpu, cores, load = sys.argv[2:6]; n = int(sys.argv[6])
runs = [json.loads(s) for s in sys.argv[7:]]
ours, theirs, naive, stock, heap, baseline = runs[:n], runs[n:2 * n], runs[2 * n:3 * n], runs[3 * n:4 * n], runs[4 * n:5 * n], runs[5 * n:]
for other in (theirs, naive):
    assert ours[0]["total_params"] == other[0]["total_params"] and ours[0]["trainable_params"] == other[0]["trainable_params"], (ours[0], other[0])
o, med = ours[0], statistics.median
gflop, tokens = o["step_gflop"], o["tokens_per_step"]
tps = lambda rs: med(x["tokens_per_s"] for x in rs)
print(f"cpu: {cpu}; {cores} cores; flags {flags}; {o['threads']} torch threads; load {load} at the end (a shared box makes absolute figures noisy: read the ratios)")
print(f"FLOPs: {o['flop_formula']}")
print(f"step = {gflop} GFLOP for {tokens} tokens; {o['total_params']:,} params, {o['trainable_params']:,} trainable, {n} alternating rounds")
print(f"peftsharp:        median {tps(ours):.1f} tok/s = {gflop * tps(ours) / tokens:.1f} GFLOP/s; 2048^3 fp32 matmul {med(x['matmul_gflops'] for x in ours):.1f} GFLOP/s; "
      f"utilisation {med(x['utilisation'] for x in ours):.1%} (median per step); {o.get('mkl', '?')}")
print(f"                  the step's frozen matmuls alone (its Linears' x W^T and g W, in a step's order, on its GEMM path: packed where it packs): {med(x['frozen_gemm_gflops'] for x in ours):.1f} GFLOP/s = "
      f"{med(x['frozen_gemm_over_matmul'] for x in ours):.1%} of the 2048^3 matmul: the ceiling these shapes put on utilisation")
stock_util = [gflop * x["tokens_per_s"] / tokens / y["matmul_gflops"] for x, y in zip(ours, stock)]
print(f"                  against stock libtorch's 2048^3 matmul (the stock-mkl run's, same round): utilisation {med(stock_util):.1%}")
print(f"peftsharp-stock-mkl: median {tps(stock):.1f} tok/s = {gflop * tps(stock) / tokens:.1f} GFLOP/s; 2048^3 fp32 matmul {med(x['matmul_gflops'] for x in stock):.1f} GFLOP/s; "
      f"utilisation {med(x['utilisation'] for x in stock):.1%}; {stock[0].get('mkl', '?')}")
peer_util = [gflop * t["tokens_per_s"] / tokens / m for t, m in zip(theirs, peer_mm)]
print(f"peftsharp-glibc-heap: median {tps(heap):.1f} tok/s; utilisation {med(x['utilisation'] for x in heap):.1%}; glibc's default heap under libtorch (as the naive step, the peer and a baseline build run), not peft train's buffer cache")
print(f"pytorch 1.13:     median {tps(theirs):.1f} tok/s = {gflop * tps(theirs) / tokens:.1f} GFLOP/s; 2048^3 fp32 matmul {med(peer_mm):.1f} GFLOP/s; "
      f"utilisation {med(peer_util):.1%} (median per round)")
naive_util = [gflop * x["tokens_per_s"] / tokens / y["matmul_gflops"] for x, y in zip(naive, stock)]
print(f"torchsharp-naive: median {tps(naive):.1f} tok/s = {gflop * tps(naive) / tokens:.1f} GFLOP/s; "
      f"utilisation {med(naive_util):.1%} (against the stock-mkl run's in-process matmul of the same round, run just before: same libtorch, same MKL path)")
def ratio(name, num, den):
    rs = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(num, den)]
    print(f"LoRA step tokens/s ratio {name} = {med(rs):.3f} (per round: {', '.join(f'{r:.3f}' for r in rs)})")
ratio("peftsharp/pytorch", ours, theirs)
ratio("peftsharp/torchsharp-naive", ours, naive)
ratio("peftsharp-stock-mkl/torchsharp-naive", stock, naive)
ratio("peftsharp/peftsharp-stock-mkl", ours, stock)
ratio("peftsharp-glibc-heap/torchsharp-naive (the engines on the same allocator)", heap, naive)
ratio("peftsharp/peftsharp-glibc-heap (peft train's buffer cache against glibc's heap)", ours, heap)
if baseline:
    print(f"baseline build: median {tps(baseline):.1f} tok/s, utilisation {med(x['utilisation'] for x in baseline):.1%}")
    ratio("baseline/torchsharp-naive", baseline, naive)
    ratio("peftsharp/baseline (after/before)", ours, baseline)
mib = lambda rs: med(x["peak_rss_kib"] for x in rs) / 1024
rr = [a["peak_rss_kib"] / b["peak_rss_kib"] for a, b in zip(ours, theirs)]
print(f"peak RSS (VmHWM of each process: runtime + model + steps): peftsharp {mib(ours):.0f} MiB, pytorch {mib(theirs):.0f} MiB, "
      f"torchsharp-naive {mib(naive):.0f} MiB, peftsharp-glibc-heap {mib(heap):.0f} MiB{f', baseline build {mib(baseline):.0f} MiB' if baseline else ''}; "
      f"peftsharp/pytorch = {med(rr):.3f} (per round: {', '.join(f'{r:.3f}' for r in rr)})")
PY
if [[ "${PROFILE:-0}" == 1 ]]; then bench lora-step "${args[@]}" --profile; fi
