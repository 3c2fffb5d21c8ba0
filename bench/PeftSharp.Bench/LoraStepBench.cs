using System.Diagnostics;
using System.Text.Json;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// lora-step: LoRA training-step tokens/s with the peer's shapes and flags (peer_lora_step.py --mode train), plus the
/// step's FLOP count and its utilisation of the measured fp32 matmul throughput on the same threads.
/// </summary>
public sealed class LoraStepBench : IBench
{
    public string Name => "lora-step";
    public string Description => "LoRA training step tokens/s + FLOP utilisation; same flags as peer_lora_step.py --mode train; --profile: where the step's time goes; --pack-weights auto|on|off as peft train's";

    static readonly JsonSerializerOptions Json = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        string allocator = BenchAllocator.Apply(a);
        var shape = LoraStepShape.Parse(a);
        int batch = shape.Batch, seq = shape.Seq, steps = a.Int("steps", 10), warmup = a.Int("warmup", 2), threads = a.Int("threads", 0);
        if (threads > 0) set_num_threads(threads);
        using var model = BenchModels.Random(shape.Config);
        using var ids = shape.Ids();
        using var step = new LoraStep(model, shape.R, shape.Alpha, shape.Targets, ids, packWeights: PeftSharp.Cli.CliOptions.PackWeights(a.Get("pack-weights", "auto")));
        double flops = StepFlops.Step(model, step.Adapter, batch, seq);
        int mmSize = a.Int("matmul", 2048);
        using var mmA = randn(mmSize, mmSize);
        using var mmB = randn(mmSize, mmSize);
        PeftSharp.Native.TensorAllocator.StartSteps();   // as the Trainer does: the buffer cache's cap follows the steps
        if (a.Flag("profile"))
        {
            StepFlops.MatmulGflops(mmA, mmB);
            return LoraStepProfile.Run(step, flops, warmup, steps, BenchStats.Median(Enumerable.Range(0, 3).Select(_ => StepFlops.MatmulGflops(mmA, mmB))));
        }
        // The matmul reference is timed right after every step, so load drift on a shared machine hits both alike.
        var times = new List<double>();
        var mmRates = new List<double>();
        var utilisation = new List<double>();
        double loss = 0;
        for (int s = 0; s < warmup + steps; s++)
        {
            var sw = Stopwatch.StartNew();
            loss = step.Run();
            double t = sw.Elapsed.TotalSeconds;
            double mm = StepFlops.MatmulGflops(mmA, mmB);
            if (s < warmup) continue;
            times.Add(t);
            mmRates.Add(mm);
            utilisation.Add(flops / t / 1e9 / mm);
        }
        double med = BenchStats.Median(times);
        // After the steps, so it cannot change what they measured: the rate of the step's own frozen matmuls alone.
        double gemms = StepFlops.FrozenGemmGflops(model, (long)batch * seq);
        long trainable = step.Adapter.ParameterCount;
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            impl = "peftsharp", mode = "train", threads = get_num_threads(), median_step_s = Math.Round(med, 4),
            tokens_per_s = Math.Round(batch * seq / med, 1), tokens_per_step = batch * seq, trainable_params = trainable, total_params = model.ParameterCount() + trainable,
            loss = Math.Round(loss, 4), step_gflop = Math.Round(flops / 1e9, 2), achieved_gflops = Math.Round(flops / med / 1e9, 1),
            matmul_gflops = Math.Round(BenchStats.Median(mmRates), 1), utilisation = Math.Round(BenchStats.Median(utilisation), 3), min_step_s = Math.Round(times.Min(), 4), flop_formula = StepFlops.Formula,
            frozen_gemm_gflops = Math.Round(gemms, 1), frozen_gemm_over_matmul = Math.Round(gemms / BenchStats.Median(mmRates), 3),
            mkl = PeftSharp.Kernels.MklCodePath.Description, allocator, packing = step.Packing,
            cache = allocator.StartsWith("libtorch") ? PeftSharp.Native.TensorBlockCache.Read().ToString() : null,
        }, Json));
        return 0;
    }
}
