using System.Diagnostics;
using System.Runtime.InteropServices;
using PeftSharp.Training.Optim;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// Where one thread's 8-bit AdamW step goes: the whole step on the AVX-512 blocks and on the AVX2 blocks, and the
/// parts alone on realistic codes (both moments' code lookups; requantisation by gathered rules vs by decade lines).
/// </summary>
public sealed unsafe class OptimPartsBench : IBench
{
    public string Name => "optim-parts";
    public string Description => "8-bit AdamW on one thread: whole step (AVX-512 vs AVX2 blocks) and its parts, ns per element (--n 4194304 --reps 15)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int n = a.Int("n", 1 << 22), reps = a.Int("reps", 15);
        set_num_threads(1);
        Console.WriteLine($"cpu: {BenchCpu.Describe()}; 8-bit kernel: {Blockwise8bitAdamKernel.Description}; 1 thread, {n:N0} elements, median of {reps}");
        using var p = randn(n) * 0.01f;
        var g = randn(n) * 1e-3f;
        long blocks = n / 256;
        using var mc = zeros(n, ScalarType.Byte);
        using var vc = zeros(n, ScalarType.Byte);
        using var ma = zeros(blocks);
        using var va = zeros(blocks);
        var o = new AdamWOptions();
        // A few real steps, so the codes and scales are an optimiser's.
        for (int s = 1; s <= 3; s++) { g.Dispose(); g = randn(n) * 1e-3f; Blockwise8bitAdamKernel.Step(p, g, mc, ma, vc, va, s, 1e-4, o); }
        byte* m8 = PeftSharp.Kernels.KernelSupport.Ptr<byte>(mc), v8 = PeftSharp.Kernels.KernelSupport.Ptr<byte>(vc);
        float* bufM = (float*)NativeMemory.AlignedAlloc(256 * 4, 64), bufV = (float*)NativeMemory.AlignedAlloc(256 * 4, 64);
        byte* outc = (byte*)NativeMemory.AlignedAlloc((nuint)n, 64);
        float* xs = (float*)NativeMemory.AlignedAlloc((nuint)n * 4, 64), xu = (float*)NativeMemory.AlignedAlloc((nuint)n * 4, 64);
        var sMap = DynamicMap.Signed;
        var uMap = DynamicMap.Unsigned;
        // What requantisation sees: moments near their codes' values, over the block's scale.
        for (long i = 0; i < n; i++) { xs[i] = sMap.Values[m8[i]] * 0.97f; xu[i] = uMap.Values[v8[i]] * 0.97f; }
        try
        {
            void Time(string name, Action f)
            {
                f();
                var t = new List<double>();
                for (int r = 0; r < reps; r++) { var sw = Stopwatch.StartNew(); f(); t.Add(sw.Elapsed.TotalMilliseconds); }
                Console.WriteLine($"{name,-40} {BenchStats.Median(t) * 1e6 / n,7:F3} ns/element (min {t.Min() * 1e6 / n:F3})");
            }
            long step = 4;
            if (Blockwise8bitAdamVector.RunsWide)
                Time("whole step, AVX-512 blocks", () => Blockwise8bitAdamKernel.Step(p, g, mc, ma, vc, va, step, 1e-4, o));
            Blockwise8bitAdamVector.UseWide = false;
            try { Time("whole step, AVX2 blocks", () => Blockwise8bitAdamKernel.Step(p, g, mc, ma, vc, va, step, 1e-4, o)); }
            finally { Blockwise8bitAdamVector.UseWide = true; }
            if (CodeTableLookup.IsSupported)
                fixed (byte* sp = sMap.ValuePlanes, up = uMap.ValuePlanes)
                {
                    byte* spp = sp, upp = up;
                    Time("code lookups m + v (byte permutes)", () =>
                    {
                        for (long b = 0; b < blocks; b++)
                        {
                            CodeTableLookup.Lookup(spp, m8 + b * 256, bufM, 256);
                            CodeTableLookup.Lookup(upp, v8 + b * 256, bufV, 256);
                        }
                    });
                }
            var sq = DecadeQuantizer.IsSupported ? DecadeQuantizer.For(sMap, true) : null;
            var uq = DecadeQuantizer.IsSupported ? DecadeQuantizer.For(uMap, false) : null;
            if (sq is not null && uq is not null)
                Time("requantise m + v (decade lines)", () =>
                {
                    for (long b = 0; b < blocks; b++)
                    {
                        sq.Quantize(xs + b * 256, 1f, outc + b * 256, 256);
                        uq.Quantize(xu + b * 256, 1f, outc + b * 256, 256);
                    }
                });
            Time("requantise m + v (search)", () =>
            {
                for (long i = 0; i < n; i++) { outc[i] = sMap.Quantize(xs[i]); outc[i] = uMap.Quantize(xu[i]); }
            });
        }
        finally
        {
            g.Dispose();
            foreach (var ptr in new[] { (void*)bufM, bufV, outc, xs, xu }) NativeMemory.AlignedFree(ptr);
        }
        return 0;
    }
}

/// <summary>
/// The decade-line requantisation (<see cref="DecadeQuantizer"/>) against the dynamic maps' own search for every float
/// in [-2, 2] (about 2.1 billion per map; ~10 s each): the exhaustive form of the unit test's sample.
/// </summary>
public sealed unsafe class DynamicMapCheckBench : IBench
{
    public string Name => "dynamic-map-check";
    public string Description => "8-bit AdamW's AVX-512 requantisation vs the dynamic maps' search for every float in [-2, 2] (--stride 1: every float; larger: a sample)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int stride = a.Int("stride", 1);
        if (!DecadeQuantizer.IsSupported) { Console.WriteLine("this CPU has no AVX-512: the kernel requantises by gathered rules (AdamW8bitTests checks them for every bucket)"); return 0; }
        const int chunk = 1 << 16;
        float* xs = (float*)NativeMemory.AlignedAlloc(chunk * 4, 64);
        byte* codes = (byte*)NativeMemory.AlignedAlloc(chunk, 64);
        int failures = 0;
        try
        {
            foreach (var signed in new[] { false, true })
            {
                var map = signed ? DynamicMap.Signed : DynamicMap.Unsigned;
                var q = DecadeQuantizer.For(map, signed);
                string name = signed ? "signed map (m)" : "unsigned map (v)";
                if (q is null) { Console.WriteLine($"{name}: no decade quantiser (the kernel would use the AVX2 blocks)"); failures++; continue; }
                long bad = 0, total = 0;
                var sw = Stopwatch.StartNew();
                for (uint sign = 0; sign <= 1; sign++)
                    for (ulong start = 0; start <= 0x40000000UL; start += (ulong)chunk * (ulong)stride)
                    {
                        for (int i = 0; i < chunk; i++) xs[i] = BitConverter.UInt32BitsToSingle((uint)Math.Min(start + (ulong)i * (ulong)stride, 0x40000000UL) | sign << 31);
                        q.Quantize(xs, 1f, codes, chunk);
                        for (int i = 0; i < chunk; i++, total++)
                            if (codes[i] != map.Quantize(xs[i]) && bad++ < 10)
                                Console.WriteLine($"  {name}: {BitConverter.SingleToUInt32Bits(xs[i]):X8} ({xs[i]:G9}) gives {codes[i]}, the search {map.Quantize(xs[i])}");
                    }
                Console.WriteLine($"{name}: {total:N0} floats, {bad} differ from the search; worst midpoint {q.WorstMidpointOffset:E2} code units off its decade line; {sw.Elapsed.TotalSeconds:F1} s");
                if (bad > 0) failures++;
            }
        }
        finally
        {
            NativeMemory.AlignedFree(xs);
            NativeMemory.AlignedFree(codes);
        }
        return failures == 0 ? 0 : 1;
    }
}
