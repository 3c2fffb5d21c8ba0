#!/usr/bin/env bash
# bf16 mixed precision (`train --compute-dtype bf16`: bf16 base and activations, fp32 adapters, AdamW state and loss):
# 1. the bf16-step bench: the LoRA step (lora-step's default shape) in bf16 vs fp32 on the same weights, alternated in one
#    run, with the CPU's bf16 flags, the thread count and the 256^3 matmul ratio `--compute-dtype auto` decides on;
# 2. the demo (`peft train`, QLoRA) for STEPS steps, once per seed of SEEDS, in three runs: fp32; fp32 again with its
#    learning rate times 1 + 1e-6 (NOISE_LR: the noise floor, a perturbation of every update at fp32's rounding level,
#    ~8 ulps; `--threads 1` does not give one: fp32 runs on 1 and 2 threads are bit-identical); and bf16. A table row per
#    seed: the noise run's and bf16's relative difference to the fp32 run in the end loss (mean of the last 10 steps),
#    the last 100 steps' mean loss, the eval loss, and the step-by-step loss over steps 1-10 (each step's own error,
#    before chaos grows it), and the three runs' exact match; then over the seeds the mean, median, RMS and range of
#    each difference, noise and bf16 side by side, how far fp32 runs of different seeds land from each other, and the
#    issue's goal (bf16's end loss within 2% of fp32's) as a mean over seeds with its standard error. One seed's end
#    loss is chaotic (a 1e-6 change of fp32's updates moves it ~0.4%, a 1e-4 change up to 4.6%, bf16's rounding of every
#    step ~10%), so judge bf16 on the statistics over seeds.
# Extra arguments go to the bf16-step bench (e.g. --rounds 5 --steps 3). THREADS (default 2), STEPS (default 100),
# SEEDS (default "42", the demo's), PART=all|bench|demo (split a long run into lock-sized pieces: one seed is three
# ~30 s runs), DEMO_DIR (keep the demo runs there; the summary then covers every seed in it, so pieces run one after
# another add up; a finished run already there is kept: delete it to run it again).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
threads="${THREADS:-2}"
steps="${STEPS:-100}"
seeds="${SEEDS:-42}"
part="${PART:-all}"
build_bench
[[ "$part" == demo ]] || bench bf16-step --threads "$threads" "$@"
[[ "$part" == bench ]] && exit 0
if [[ -n "${DEMO_DIR:-}" ]]; then demo="$DEMO_DIR"; mkdir -p "$demo"
else demo="$(mktemp -d)"; trap 'rm -rf "$demo"' EXIT; fi
noise_lr="${NOISE_LR:-0.001000001}"   # the demo's default --lr (1e-3) times 1 + 1e-6
for seed in $seeds; do
  for side in fp32 fp32-noise bf16; do
    run="$demo/s$seed-$steps-$side"
    if [[ -s "$run/metrics.jsonl" ]] && grep -q "eval loss: before" "$run.log" 2>/dev/null; then continue; fi   # done earlier
    rm -rf "$run"
    args=(--compute-dtype "${side%-noise}")
    [[ "$side" == fp32-noise ]] && args+=(--lr "$noise_lr")
    (cd "$root" && dotnet "$bench_bin/peft.dll" train --steps "$steps" --seed "$seed" "${args[@]}" --threads "$threads" --out "$run" >"$run.log" 2>&1) \
      || { cat "$run.log" >&2; exit 1; }
  done
done
python3 - "$demo" "$steps" <<'PY'
import glob, json, math, os, re, statistics, sys
demo, steps = sys.argv[1], int(sys.argv[2])
sides = ("fp32", "fp32-noise", "bf16")
def rows(run): return [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
def run_figures(run):
    loss = [r["loss"] for r in rows(run) if "loss" in r]
    log = open(f"{run}.log").read()
    ev = re.search(r"eval loss: before [\d.]+, after ([\d.]+)", log)
    em = re.search(r"exact-match accuracy: before [\d.]+ %, after ([\d.]+) %", log)
    speed = sorted(r["tokens_per_s"] for r in rows(run) if "tokens_per_s" in r)
    return {"loss": loss, "end": statistics.mean(loss[-10:]), "last100": statistics.mean(loss[-100:]),
            "eval": float(ev.group(1)) if ev else math.nan, "exact": float(em.group(1)) if em else math.nan,
            "tok_s": speed[len(speed) // 2]}
seeds = {}
for f in sorted(glob.glob(f"{demo}/s*-{steps}-fp32/metrics.jsonl")):
    base = f[:-len("fp32/metrics.jsonl")]
    if all(os.path.exists(f"{base}{s}/metrics.jsonl") for s in sides):
        seeds[os.path.basename(base).split("-")[0][1:]] = {s: run_figures(base + s) for s in sides}
if not seeds: sys.exit("no seed has all three runs (fp32, fp32-noise, bf16)")
rms = lambda xs: math.sqrt(statistics.mean(x * x for x in xs))
diff = lambda r, side, k: r[side][k] / r["fp32"][k] - 1
def first10(r, side):   # RMS of the step-by-step loss difference over steps 1-10: each step's own error, before chaos grows it
    return rms([a / b - 1 for a, b in list(zip(r[side]["loss"], r["fp32"]["loss"]))[:10]])
print(f"demo (peft train, QLoRA, {steps} steps): each run against the fp32 run of its seed. noise = fp32 with --lr x (1 + 1e-6), "
      f"the noise floor of one run; end = mean loss of the last 10 steps, last100 = of the last 100, eval = eval loss after "
      f"training; first10 = RMS of the step-by-step loss difference over steps 1-10 (each step's rounding error before "
      f"the trajectories part; later steps amplify any difference chaotically)")
print(f"{'seed':>4} | {'fp32 end':>8} | {'end: noise':>10} {'bf16':>8} | {'last100: noise':>14} {'bf16':>8} | "
      f"{'eval: noise':>11} {'bf16':>8} | {'first10: noise':>14} {'bf16':>7} | exact match % fp32 / noise / bf16 | tok/s fp32 / bf16")
for seed, r in seeds.items():
    d = lambda side, k: f"{diff(r, side, k):+.2%}"
    print(f"{seed:>4} | {r['fp32']['end']:8.4f} | {d('fp32-noise', 'end'):>10} {d('bf16', 'end'):>8} | "
          f"{d('fp32-noise', 'last100'):>14} {d('bf16', 'last100'):>8} | {d('fp32-noise', 'eval'):>11} {d('bf16', 'eval'):>8} | "
          f"{first10(r, 'fp32-noise'):14.4%} {first10(r, 'bf16'):7.3%} | "
          f"{r['fp32']['exact']:5.1f} / {r['fp32-noise']['exact']:5.1f} / {r['bf16']['exact']:5.1f} | "
          f"{r['fp32']['tok_s']:.0f} / {r['bf16']['tok_s']:.0f}")
def stats(xs):
    return f"mean {statistics.mean(xs):+.2%}, median {statistics.median(xs):+.2%}, RMS {rms(xs):.2%}, range {min(xs):+.2%} .. {max(xs):+.2%}"
print(f"over {len(seeds)} seed(s) ({', '.join(seeds)}):")
for k in ("end", "last100", "eval"):
    for side in ("fp32-noise", "bf16"):
        print(f"  {k:>7} {side:>10} vs fp32: {stats([diff(r, side, k) for r in seeds.values()])}")
for side in ("fp32-noise", "bf16"):
    print(f"  first10 {side:>10} vs fp32: RMS {rms([first10(r, side) for r in seeds.values()]):.4%}")
for side in sides:
    print(f"  exact match {side:>10}: mean {statistics.mean(r[side]['exact'] for r in seeds.values()):.1f} %, "
          f"min {min(r[side]['exact'] for r in seeds.values()):.1f} %")
if len(seeds) > 1:
    ends = [r["fp32"]["end"] for r in seeds.values()]
    pairs = [a / b - 1 for i, a in enumerate(ends) for j, b in enumerate(ends) if i != j]
    print(f"  fp32 runs of different seeds: end losses {min(ends):.4f} .. {max(ends):.4f}, pairwise difference RMS {rms(pairs):.2%} "
          f"(how far an independent run lands; bf16 vs its fp32 twin above)")
    d = [diff(r, "bf16", "end") for r in seeds.values()]
    se = statistics.stdev(d) / math.sqrt(len(d))
    print(f"  goal (issue 17, bf16's end loss within 2% of fp32's): over the seeds mean {statistics.mean(d):+.2%} "
          f"(standard error {se:.2%}), median {statistics.median(d):+.2%}. One seed's own difference is chaos: a 1e-6 change of "
          f"fp32's updates already moves its end loss by RMS {rms([diff(r, 'fp32-noise', 'end') for r in seeds.values()]):.2%}, "
          f"and bf16 changes every step by ~{rms([first10(r, 'bf16') for r in seeds.values()]):.1%}")
PY
