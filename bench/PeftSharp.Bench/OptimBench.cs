using System.Diagnostics;
using PeftSharp.Training.Optim;
using TorchSharp.Modules;
using static TorchSharp.torch;
using AdamW = PeftSharp.Training.Optim.AdamW;

namespace PeftSharp.Bench;

/// <summary>
/// Step time and state bytes of 8-bit and paged AdamW against fp32 AdamW, in one run, on LoRA-sized
/// parameters plus a few large square ones.
/// </summary>
public sealed class OptimBench : IBench
{
    public string Name => "optim";
    public string Description => "8-bit / paged AdamW step time and state bytes vs fp32 AdamW (--lora 64 --hidden 2048 --rank 16 --large 2 --large-dim 4096 --steps 7 --threads 0)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int lora = a.Int("lora", 64), hidden = a.Int("hidden", 2048), rank = a.Int("rank", 16);
        int large = a.Int("large", 2), largeDim = a.Int("large-dim", 4096), steps = a.Int("steps", 7), threads = a.Int("threads", 0);
        if (threads > 0) set_num_threads(threads);

        var ps = new List<(string Name, Parameter Param)>();
        for (int i = 0; i < lora; i++)
        {
            ps.Add(($"lora.{i}.A", new Parameter(randn(rank, hidden) * 0.01)));
            ps.Add(($"lora.{i}.B", new Parameter(randn(hidden, rank) * 0.01)));
        }
        for (int i = 0; i < large; i++) ps.Add(($"large.{i}", new Parameter(randn(largeDim, largeDim) * 0.01)));
        foreach (var (_, p) in ps) p.grad = randn(p.shape) * 1e-3;
        long paramCount = ps.Sum(p => p.Param.NumberOfElements);
        Console.WriteLine($"cpu: {BenchCpu.Describe()}; 8-bit kernel: {Blockwise8bitAdamKernel.Description}");
        Console.WriteLine($"parameters: {lora} LoRA pairs [{rank}x{hidden}, {hidden}x{rank}] + {large} x [{largeDim}x{largeDim}] = {paramCount:N0}; threads {get_num_threads()}; median of {steps} round-robin steps after 1 warm-up");

        string dir = Path.Combine(Path.GetTempPath(), "peftsharp-optim-bench-" + Guid.NewGuid().ToString("N"));
        var variants = new (string Name, Func<AdamWBase> Make)[]
        {
            ("AdamW fp32", () => new AdamW(ps)),
            ("AdamW fp32 libtorch ops", () => new OpsAdamW(ps)),
            ("AdamW8bit", () => new AdamW8bit(ps)),
            ("AdamW8bit AVX2 blocks", () => new Avx2BlocksAdamW8bit(ps)),
            ("AdamW8bit scalar kernel", () => new ScalarKernelAdamW8bit(ps)),
            ("PagedAdamW (mmap)", () => new PagedAdamW(ps, Path.Combine(dir, "p32"))),
            ("PagedAdamW8bit (mmap)", () => new PagedAdamW8bit(ps, Path.Combine(dir, "p8"))),
            ("PagedAdamW staged", () => new PagedAdamW(ps, Path.Combine(dir, "ps"), stage: true)),
        };
        Console.WriteLine($"{"optimizer",-24}{"step ms",10}{"vs fp32",9}{"state MB",10}{"B/param",9}{"resident MB",13}");
        var opts = new List<AdamWBase>();
        try
        {
            foreach (var (_, make) in variants) opts.Add(make());
            foreach (var o in opts) o.Step(); // warm-up: allocates and first-touches state
            // Round-robin, so that load changes on a shared machine hit every variant alike.
            var times = opts.Select(_ => new List<double>()).ToList();
            for (int s = 0; s < steps; s++)
                for (int k = 0; k < opts.Count; k++)
                {
                    var sw = Stopwatch.StartNew();
                    opts[k].Step();
                    times[k].Add(sw.Elapsed.TotalMilliseconds);
                }
            double baseline = BenchStats.Median(times[0]);
            for (int k = 0; k < opts.Count; k++)
            {
                double med = BenchStats.Median(times[k]);
                var o = opts[k];
                Console.WriteLine($"{variants[k].Name,-24}{med,10:F1}{med / baseline,9:F2}{o.StateBytes / 1e6,10:F1}{(double)o.StateBytes / paramCount,9:F2}{o.ResidentStateBytes / 1e6,13:F1}");
            }
        }
        finally
        {
            foreach (var o in opts) o.Dispose();
            try { Directory.Delete(dir, true); } catch (IOException) { }
            foreach (var (_, p) in ps) p.Dispose();
        }
        return 0;
    }
}

/// <summary>AdamW8bit on the scalar kernel (the vectorised kernel's oracle), to show what vectorising gained.</summary>
sealed class ScalarKernelAdamW8bit(IReadOnlyList<(string Name, Parameter Param)> parameters) : AdamW8bit(parameters)
{
    protected override void Update(Tensor param, Tensor grad, Tensor[] state, long step)
    {
        if (state.Length == 4 && param.dtype == ScalarType.Float32)
            Blockwise8bitAdamKernel.StepScalar(param, grad, state[0], state[1], state[2], state[3], step, LearningRate, Options);
        else base.Update(param, grad, state, step);
    }
}

/// <summary>AdamW8bit on the AVX2 blocks (gathered requantisation rules) where the CPU would run the AVX-512 ones, to show what those gained.</summary>
sealed class Avx2BlocksAdamW8bit(IReadOnlyList<(string Name, Parameter Param)> parameters) : AdamW8bit(parameters)
{
    protected override void Update(Tensor param, Tensor grad, Tensor[] state, long step)
    {
        Blockwise8bitAdamVector.UseWide = false;
        try { base.Update(param, grad, state, step); }
        finally { Blockwise8bitAdamVector.UseWide = true; }
    }
}

/// <summary>AdamW on in-place libtorch ops (the path before the fused CPU kernel, still the one on other devices), to
/// show what fusing gained.</summary>
sealed class OpsAdamW(IReadOnlyList<(string Name, Parameter Param)> parameters) : AdamW(parameters)
{
    protected override void Update(Tensor param, Tensor grad, Tensor[] state, long step) =>
        AdamW.Fp32UpdateOps(param, grad, state[0], state[1], step, LearningRate, Options);
}
