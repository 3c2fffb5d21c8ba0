#!/usr/bin/env python3
"""Where a profiled step's CPU time goes, by thread and by kind of code: reads `perf script -F pid,tid,time,ip,sym,dso` ("pid/tid time: ip symbol (dso)" lines)
(samples already limited to the timed steps) on stdin and prints ms per step for the main thread, libtorch's OpenMP
worker and any other thread, then what the main thread was doing while the worker waited in libgomp (the 2-thread loss:
serial work on the main thread, or a parallel region's uneven end). Used by bench/lora-step-perf.sh and bench/qlora-step-perf.sh."""
import argparse, bisect, collections, sys

# (label, test on the sample's "symbol (dso)" text), first match wins.
KINDS = [
    ("OpenMP wait (libgomp spin/barrier)", lambda s: "libgomp" in s),
    # MKL's unpacked "nocopy" kernels run the small GEMMs (LoRA's rank-r products); the blocked ones the large GEMMs.
    ("MKL sgemm nocopy kernels (small GEMMs)", lambda s: "sgemm_kernel_nocopy" in s),
    ("MKL sgemm micro-kernels", lambda s: "sgemm_kernel" in s or "sgemm_ker0" in s),
    ("MKL packing, copies, driver", lambda s: "mkl_" in s or "gblock" in s or "acopy" in s or "gemm_omp_driver" in s),
    ("attention kernel: products (Mul8, Mul4x64)", lambda s: "CausalAttentionKernel::Mul" in s),
    ("attention kernel: packing, softmax, rest", lambda s: "CausalAttention" in s),
    ("other C# kernels (RMSNorm, SwiGLU, loss)", lambda s: "PeftSharp.Kernels" in s),
    ("NF4 dequantisation (QLoRA)", lambda s: "PeftSharp.Quantization" in s),
    (".NET memmove / clear (kernels' copies)", lambda s: "SpanHelpers::Memmove" in s or "SpanHelpers::Clear" in s),
    ("libtorch elementwise loops (adds, copies)", lambda s: "function_ref" in s or "VectorizedLoop" in s or "vml" in s),
    ("libtorch dispatch, autograd, other", lambda s: "libtorch" in s or "libc10" in s or "libLibTorchSharp" in s),
    ("malloc / free / memcpy (libc)", lambda s: "libc.so" in s),
    ("OS kernel (page faults, scheduler)", lambda s: "kernel.kallsyms" in s or "[k]" in s),
    ("managed (.NET runtime, JIT code)", lambda s: True),
]


def kind(text):
    return next(label for label, test in KINDS if test(text))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--freq", type=float, required=True, help="perf record's sampling frequency (Hz)")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True, help="the window's length")
    a = ap.parse_args()
    samples = []   # (pid, tid, time, kind)
    for line in sys.stdin:
        parts = line.split(None, 3)   # "pid/tid time: ip symbol (dso)"
        if len(parts) < 4 or "/" not in parts[0]:
            continue
        (pid, tid), t, rest = parts[0].split("/"), parts[1], parts[3]
        samples.append((pid, tid, float(t.rstrip(":")), kind(rest)))
    if not samples:
        sys.exit("perf_by_thread: no samples in the window")
    per_ms = 1e3 / a.freq / a.steps
    by_tid = collections.Counter(s[1] for s in samples)
    main_tid = samples[0][0]   # the process's first thread (its tid is the pid) runs the step
    others = [t for t, _ in by_tid.most_common() if t != main_tid]
    worker = others[0] if others else None
    columns = [("main", {main_tid})] + ([("omp worker", {worker})] if worker else []) + ([("other threads", set(others[1:]))] if others[1:] else [])
    table = collections.Counter((name, s[3]) for s in samples for name, tids in columns if s[1] in tids)
    print(f"perf samples of the timed steps, ms per step (a sample = {1e3 / a.freq:.2f} ms of one thread; {a.steps} steps, "
          f"{a.seconds / a.steps * 1e3:.1f} ms wall each)")
    print(f"  {'kind of code':44}" + "".join(f"{name:>15}" for name, _ in columns))
    for label, _ in KINDS:
        if any(table[(name, label)] for name, _ in columns):
            print(f"  {label:44}" + "".join(f"{table[(name, label)] * per_ms:15.1f}" for name, _ in columns))
    totals = {name: sum(table[(name, label)] for label, _ in KINDS) for name, _ in columns}
    print(f"  {'on CPU':44}" + "".join(f"{totals[name] * per_ms:15.1f}" for name, _ in columns))
    wall = a.seconds * a.freq
    print(f"  {'off CPU (asleep, or waiting for a core)':44}" + "".join(
        f"{max(0.0, wall - totals[name]) * per_ms:15.1f}" if name != "other threads" else f"{'':15}" for name, _ in columns))
    if not worker:
        return
    # What one thread ran at the moments the other was sampled waiting: the worker's wait is the work that had no second
    # thread (serial work on the main thread, or a parallel region's uneven end); the main thread's wait is the converse
    # (a region's end where the worker was the slower one). An MKL GEMM's end shows in both, the serial work in the first.
    for waiter, runner, name in ((worker, main_tid, "the omp worker"), (main_tid, worker, "the main thread")):
        run_times = sorted((s[2], s[3]) for s in samples if s[1] == runner)
        keys = [m[0] for m in run_times]
        near = collections.Counter()
        for s in samples:
            if s[1] != waiter or s[3] != KINDS[0][0]:
                continue
            i = bisect.bisect_left(keys, s[2])
            j = min((k for k in (i - 1, i) if 0 <= k < len(keys)), key=lambda k: abs(keys[k] - s[2]))
            near[run_times[j][1] if abs(keys[j] - s[2]) <= 1 / a.freq else "(no sample of the other thread near it)"] += 1
        waited = sum(near.values())
        other = "the main thread" if runner == main_tid else "the omp worker"
        print(f"while {name} waited ({waited * per_ms:.1f} ms per step), {other} ran:")
        for label, n in near.most_common():
            print(f"  {label:44}{n * per_ms:15.1f}")


if __name__ == "__main__":
    main()
