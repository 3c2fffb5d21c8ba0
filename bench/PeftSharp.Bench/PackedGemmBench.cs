using System.Diagnostics;
using PeftSharp.Kernels;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// packed-gemm: x W^T through libtorch's linear (MKL's sgemm, which repacks W at every call) against MKL's packed GEMM
/// (Kernels/PackedGemm), for weights packed for several row counts and products of several row counts: where packing
/// pays, and why Kernels/PackedLinear only takes products of at least the rows a weight was packed for.
/// </summary>
public sealed class PackedGemmBench : IBench
{
    public string Name => "packed-gemm";
    public string Description => "linear vs MKL's packed GEMM by weight shape, pack rows and product rows (--shapes 512x512,768x768,1344x512,2048x2048 --pack-rows 64,256,1024 --rows 64,256,1024 --threads 2 --backward: g W instead of x W^T)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        set_num_threads(a.Int("threads", 2));
        Console.WriteLine($"cpu: {BenchCpu.Describe()}; torch threads {get_num_threads()}; {MklCodePath.Description}");
        if (!PackedGemm.Available) { Console.WriteLine("MKL's pack API is not exported by this libtorch"); return 1; }
        var shapes = a.Get("shapes", "512x512,768x768,1344x512,2048x2048").Split(',').Select(s => s.Split('x').Select(long.Parse).ToArray()).ToList();
        var packRows = a.Get("pack-rows", "64,256,1024").Split(',').Select(int.Parse).ToArray();
        var rows = a.Get("rows", "64,256,1024").Split(',').Select(long.Parse).ToArray();
        bool backward = a.Flag("backward");   // the input gradient's product g [m, out] W instead of x [m, in] W^T
        using var noGrad = no_grad();
        foreach (var s in shapes)
        {
            using var w = randn(s[0], s[1]);
            var packs = packRows.Select(r => new PackedGemm.PackedWeight(w, forward: !backward, r)).ToArray();
            Console.WriteLine($"W [{s[0]}, {s[1]}], {(backward ? "g W" : "x W^T")}: libtorch ms, then libtorch / packed time for a pack made for {string.Join(", ", packRows)} rows (> 1: packed faster)");
            foreach (var m in rows)
            {
                using var x = randn(m, backward ? s[0] : s[1]);
                int reps = (int)Math.Clamp(2e8 / (2.0 * m * s[0] * s[1]), 5, 2000);
                double Best(Func<Tensor> f)
                {
                    for (int k = 0; k < 3; k++) f().Dispose();
                    return Enumerable.Range(0, 3).Select(_ =>
                    {
                        var sw = Stopwatch.StartNew();
                        for (int k = 0; k < reps; k++) f().Dispose();
                        return sw.Elapsed.TotalMilliseconds / reps;
                    }).Min();
                }
                double linear = Best(() => backward ? x.mm(w) : nn.functional.linear(x, w));
                Console.WriteLine($"  {m,6} rows: {linear,8:F3} ms; {string.Join("  ", packs.Select(p => (linear / Best(() => p.Times(x))).ToString("F2")))}");
            }
            foreach (var p in packs) p.Dispose();
        }
        return 0;
    }
}
