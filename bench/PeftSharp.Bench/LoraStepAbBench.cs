using System.Diagnostics;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// The fp32 LoRA step of `lora-step` (same model, shape flags and targets) with C# kernels on, and with --off of them
/// off, alternated in one process: separate processes of one build spread 5-10% in tokens/s on the shared 2-core box
/// (bench/lora-step.sh with BASELINE_BIN = the same build), far more than a 1% change. Each round runs --steps steps
/// of each side, the side that goes first alternating round by round (the first ran ~1% slower: ABBA); each step's
/// utilisation is taken against a 2048^3 matmul timed right after it. --both-off turns kernels off on both sides (with
/// --off empty: the null test, whose on/off ratio shows the method's noise).
/// </summary>
public sealed class LoraStepAbBench : IBench
{
    public string Name => "lora-step-ab";
    public string Description => $"fp32 LoRA step with / without C# kernels in one process, ABBA rounds (lora-step's shape flags; --off and --both-off: {KernelSwitches.Names}, comma-separated; --rounds 16 --steps 3 --warmup 2 --threads 2; --trace: every step's utilisation in order)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        string allocator = BenchAllocator.Apply(a);
        var shape = LoraStepShape.Parse(a);
        int batch = shape.Batch, seq = shape.Seq, rounds = a.Int("rounds", 16), steps = a.Int("steps", 3), warmup = a.Int("warmup", 2);
        var off = KernelSwitches.Parse("off", a.Get("off", ""));
        var bothOff = KernelSwitches.Parse("both-off", a.Get("both-off", ""));
        set_num_threads(a.Int("threads", 2));
        using var model = BenchModels.Random(shape.Config);
        using var ids = shape.Ids();
        using var step = new LoraStep(model, shape.R, shape.Alpha, shape.Targets, ids);
        double flops = StepFlops.Step(model, step.Adapter, batch, seq);
        using var mmA = randn(2048, 2048);
        using var mmB = randn(2048, 2048);
        PeftSharp.Native.TensorAllocator.StartSteps();   // as lora-step and the Trainer: the buffer cache's cap follows the steps
        using var always = KernelSwitches.Off(bothOff);
        for (int w = 0; w < warmup; w++)
        {
            step.Run();
            using (KernelSwitches.Off(off)) step.Run();
        }
        var util = new[] { new List<double>(), new List<double>() };
        var ms = new[] { new List<double>(), new List<double>() };
        // ms per step inside the attention kernel (forward, backward): where a switch of the kernel's own moves time
        var attention = new[] { new List<(double F, double B)>(), new List<(double F, double B)>() };
        var ratios = new List<double>();
        var order = new List<double>();   // every step's utilisation in the order run (--trace prints them: the warm-up curve)
        for (int round = 0; round < rounds; round++)
        {
            var roundUtil = new[] { new List<double>(), new List<double>() };
            for (int k = 0; k < 2; k++)
            {
                int side = (round & 1) == 0 ? k : 1 - k;
                for (int s = 0; s < steps; s++)
                {
                    using var sw = side == 1 ? KernelSwitches.Off(off) : null;
                    var inside = PeftSharp.Kernels.CausalAttention.KernelSeconds;
                    var t = Stopwatch.StartNew();
                    step.Run();
                    double sec = t.Elapsed.TotalSeconds, mm = StepFlops.MatmulGflops(mmA, mmB);
                    var after = PeftSharp.Kernels.CausalAttention.KernelSeconds;
                    attention[side].Add(((after.Forward - inside.Forward) * 1e3, (after.Backward - inside.Backward) * 1e3));
                    roundUtil[side].Add(flops / sec / 1e9 / mm);
                    order.Add(flops / sec / 1e9 / mm);
                    ms[side].Add(sec * 1e3);
                }
            }
            for (int side = 0; side < 2; side++) util[side].AddRange(roundUtil[side]);
            ratios.Add(BenchStats.Median(roundUtil[0]) / BenchStats.Median(roundUtil[1]));
        }
        Console.WriteLine($"cpu: {BenchCpu.Describe()}; torch threads {get_num_threads()}; allocator {allocator}; load {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine($"off on both sides: {(bothOff.Length == 0 ? "none" : string.Join(",", bothOff))}; {rounds} ABBA rounds of {steps} steps per side");
        string Attention(int side) => $"attention kernel fwd {BenchStats.Median(attention[side].Select(x => x.F)):F2} + bwd {BenchStats.Median(attention[side].Select(x => x.B)):F2} ms";
        Console.WriteLine($"on:  median {BenchStats.Median(ms[0]):F1} ms/step, utilisation {BenchStats.Median(util[0]):P1}, {Attention(0)}");
        Console.WriteLine($"off ({(off.Length == 0 ? "none: null test" : string.Join(",", off))}): median {BenchStats.Median(ms[1]):F1} ms/step, utilisation {BenchStats.Median(util[1]):P1}, {Attention(1)}");
        if (a.Flag("trace")) Console.WriteLine($"each step's utilisation in order (after {2 * warmup} warmup steps): {string.Join(" ", order.Select(x => x.ToString("F3")))}");
        Console.WriteLine($"on/off utilisation = {BenchStats.Median(ratios):F3} (per round: {string.Join(", ", ratios.Select(x => x.ToString("F3")))})");
        return 0;
    }
}
