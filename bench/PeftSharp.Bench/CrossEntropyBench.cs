using System.Diagnostics;
using PeftSharp.Kernels;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// The training loss (CausalLmLoss: shifted labels, -100 masked) forward and backward at the lora-step shape: the fused
/// kernel (<see cref="CrossEntropy"/>) against libtorch's cross_entropy, alternated round by round.
/// </summary>
public sealed class CrossEntropyBench : IBench
{
    public string Name => "cross-entropy";
    public string Description => "fused cross-entropy kernel vs libtorch's cross_entropy in CausalLmLoss, fwd and bwd ms (--batch 4 --seq 256 --vocab 4096 --rounds 9 --threads 2)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int b = a.Int("batch", 4), t = a.Int("seq", 256), v = a.Int("vocab", 4096), rounds = a.Int("rounds", 9), threads = a.Int("threads", 2);
        if (threads > 0) set_num_threads(threads);
        Console.WriteLine($"cpu: {BenchCpu.Describe()}; torch threads {get_num_threads()}");
        if (!CrossEntropyKernel.Supported) { Console.WriteLine("the kernel needs AVX-512F or AVX2 + FMA: nothing to compare"); return 0; }
        manual_seed(1);
        using var logits = randn(b, t, v).requires_grad_(true);
        using var labels = randint(0, v, [b, t], ScalarType.Int64);
        labels.narrow(1, t - t / 8, t / 8).fill_(-100);   // some padding
        var sides = new (string Name, Func<IDisposable?> Mode)[] { ("libtorch cross_entropy", CrossEntropy.Off), ("fused kernel", () => null) };
        var fwd = sides.Select(_ => new List<double>()).ToList();
        var bwd = sides.Select(_ => new List<double>()).ToList();
        for (int r = -1; r < rounds; r++)   // round -1 warms up
            for (int s = 0; s < sides.Length; s++)
            {
                using var mode = sides[s].Mode();
                using var scope = NewDisposeScope();
                var sw = Stopwatch.StartNew();
                var loss = CausalLmLoss.Sum(logits, labels);
                double f = sw.Elapsed.TotalMilliseconds;
                sw.Restart();
                loss.backward();
                double g = sw.Elapsed.TotalMilliseconds;
                logits.grad = null;
                if (r >= 0) { fwd[s].Add(f); bwd[s].Add(g); }
            }
        Console.WriteLine($"shape: [{b}, {t}, {v}] logits; median of {rounds} alternated rounds");
        BenchStats.PrintFwdBwd(sides.Select(x => x.Name).ToList(), fwd, bwd, 24);
        BenchStats.PrintFwdBwdRatio("libtorch/kernel", fwd, bwd);
        return 0;
    }
}
