using System.Diagnostics;
using PeftSharp.Kernels;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// The LoRA step's RMSNorms (4 layers x 2 + final = 9 by default) forward and backward through the model's RmsNorm
/// module: the C# kernel (<see cref="RmsNormFunction"/>) against the op chain it replaces (pow, mean, rsqrt, mul, mul and
/// their autograd nodes), alternated round by round. Inputs need a gradient (the residual stream does), the weight is
/// frozen (LoRA) unless --train-weight.
/// </summary>
public sealed class RmsNormBench : IBench
{
    public string Name => "rmsnorm";
    public string Description => "RMSNorm kernel vs the op chain, 9 norms fwd+bwd ms (--rows 1024 --hidden 512 --norms 9 --rounds 9 --threads 2 --train-weight false --dtype fp32|bf16)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int rows = a.Int("rows", 1024), h = a.Int("hidden", 512), norms = a.Int("norms", 9), rounds = a.Int("rounds", 9), threads = a.Int("threads", 2);
        bool trainWeight = a.Get("train-weight", "false") == "true";
        var dtype = a.Get("dtype", "fp32") == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32;
        if (threads > 0) set_num_threads(threads);
        Console.WriteLine($"cpu: {BenchCpu.Describe()}; torch threads {get_num_threads()}");
        if (!RmsNormKernel.Supported) { Console.WriteLine("neither AVX-512F nor AVX2 + FMA: the model keeps the op chain, nothing to compare"); return 0; }
        manual_seed(1);
        var norm = new RmsNorm("norm", h, 1e-5, dtype);
        using (no_grad()) norm.weight.uniform_(0.5, 1.5);
        norm.weight.requires_grad_(trainWeight);
        var xs = Enumerable.Range(0, norms).Select(_ => randn(rows, h).to_type(dtype).requires_grad_(true)).ToArray();
        var gs = Enumerable.Range(0, norms).Select(_ => randn(rows, h).to_type(dtype)).ToArray();
        var sides = new (string Name, bool Kernel)[] { ("op chain", false), ("kernel", true) };
        var inside = new List<(double F, double B)>();
        var fwd = sides.Select(_ => new List<double>()).ToList();
        var bwd = sides.Select(_ => new List<double>()).ToList();
        for (int r = -1; r < rounds; r++)   // round -1 warms up
            for (int s = 0; s < sides.Length; s++)
            {
                using var scope = NewDisposeScope();
                using var off = sides[s].Kernel ? null : RmsNormFunction.Off();
                var before = RmsNormFunction.KernelSeconds;
                var sw = Stopwatch.StartNew();
                var ys = xs.Select(x => norm.forward(x)).ToArray();
                double f = sw.Elapsed.TotalMilliseconds;
                sw.Restart();
                autograd.backward(ys, gs);
                double g = sw.Elapsed.TotalMilliseconds;
                foreach (var x in xs) x.grad = null;
                norm.weight.grad = null;
                if (r >= 0) { fwd[s].Add(f); bwd[s].Add(g); }
                var after = RmsNormFunction.KernelSeconds;
                if (r >= 0 && sides[s].Kernel) inside.Add(((after.Forward - before.Forward) * 1e3, (after.Backward - before.Backward) * 1e3));
            }
        Console.WriteLine($"shape: {norms} norms of [{rows}, {h}] {dtype}, weight {(trainWeight ? "trained" : "frozen")}; median of {rounds} alternated rounds");
        BenchStats.PrintFwdBwd(sides.Select(x => x.Name).ToList(), fwd, bwd, 12);
        Console.WriteLine($"inside the kernel (no autograd, no allocation): fwd {BenchStats.Median(inside.Select(x => x.F)):F2} ms, bwd {BenchStats.Median(inside.Select(x => x.B)):F2} ms");
        BenchStats.PrintFwdBwdRatio("chain/kernel", fwd, bwd);
        return 0;
    }
}
