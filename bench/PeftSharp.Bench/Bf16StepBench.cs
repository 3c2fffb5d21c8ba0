using PeftSharp.Kernels;
using System.Diagnostics;
using System.Text.Json;
using PeftSharp.Models;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// bf16-step: the LoRA training step (lora-step's shape and flags) with the base in bf16 (fp32 adapters, AdamW state and
/// loss, as `train --compute-dtype bf16` runs it) against the same step in fp32, on the same random weights, alternating
/// one fp32 and one bf16 measurement per round so load drift on a shared machine hits both. Prints the CPU's bf16 flags,
/// the thread count and the 256^3 matmul ratio that `--compute-dtype auto` decides on.
/// </summary>
public sealed class Bf16StepBench : IBench
{
    public string Name => "bf16-step";
    public string Description => "LoRA step tokens/s, bf16 base (fp32 adapters) vs fp32, alternated rounds; lora-step's flags plus --rounds; --profile: both steps' lora-step profile tables (--only fp32|bf16: one of them, e.g. under perf); --kernels-off swiglu,attention,rmsnorm: a third side, bf16 with those kernels off";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        var shape = LoraStepShape.Parse(a);
        int batch = shape.Batch, seq = shape.Seq, steps = a.Int("steps", 3), warmup = a.Int("warmup", 2);
        int threads = a.Int("threads", 0), rounds = a.Int("rounds", 5);
        if (threads > 0) set_num_threads(threads);

        var flags = MatmulProbe.Bf16Flags();
        bool hasBf16 = flags.Contains("avx512_bf16") || flags.Contains("amx_bf16");
        var probe = MatmulProbe.Measure();
        var config = shape.Config;
        using var fp32 = BenchModels.Random(config);
        using var bf16 = WithDtype(fp32, ScalarType.BFloat16);
        using var ids = shape.Ids();
        using var step32 = new LoraStep(fp32, shape.R, shape.Alpha, shape.Targets, ids);
        using var step16 = new LoraStep(bf16, shape.R, shape.Alpha, shape.Targets, ids);
        if (a.Flag("profile")) return Profile(step32, step16, fp32, batch, seq, warmup, steps, a.Get("only", "both"));
        // --kernels-off swiglu,attention,rmsnorm: a third side, the same bf16 step with those C# kernels off (libtorch's
        // ops instead), alternated in the same rounds: a change to a kernel's bf16 path measured against its absence.
        var off = KernelSwitches.Parse("kernels-off", a.Get("kernels-off", ""));
        IDisposable KernelsOff() => KernelSwitches.Off(off);
        double RunOff() { using var _ = KernelsOff(); return step16.Run(); }
        for (int w = 0; w < warmup; w++) { step32.Run(); step16.Run(); if (off.Length > 0) RunOff(); }

        var t32 = new List<double>();
        var t16 = new List<double>();
        var ratios = new List<double>();
        var tOff = new List<double>();
        var offGains = new List<double>();
        double loss32 = 0, loss16 = 0, lossOff = 0;
        for (int round = 0; round < rounds; round++)
        {
            double Time(Func<double> step, ref double loss)
            {
                var times = new List<double>();
                for (int i = 0; i < steps; i++)
                {
                    var sw = Stopwatch.StartNew();
                    loss = step();
                    times.Add(sw.Elapsed.TotalSeconds);
                }
                return BenchStats.Median(times);
            }
            // Alternate which side goes first, so neither always follows the other's cache state.
            double a32, a16, aOff = 0;
            if (round % 2 == 0)
            {
                a32 = Time(step32.Run, ref loss32); a16 = Time(step16.Run, ref loss16);
                if (off.Length > 0) aOff = Time(RunOff, ref lossOff);
            }
            else
            {
                if (off.Length > 0) aOff = Time(RunOff, ref lossOff);
                a16 = Time(step16.Run, ref loss16); a32 = Time(step32.Run, ref loss32);
            }
            t32.Add(a32); t16.Add(a16); ratios.Add(a32 / a16);
            string offText = "";
            if (off.Length > 0)
            {
                tOff.Add(aOff); offGains.Add(aOff / a16);
                offText = $", bf16 kernels-off {batch * seq / aOff:F0} tok/s (fp32 ratio {a32 / aOff:F3}; on/off {aOff / a16:F3})";
            }
            Console.Error.WriteLine($"round {round + 1}: fp32 {batch * seq / a32:F0} tok/s, bf16 {batch * seq / a16:F0} tok/s, ratio {a32 / a16:F3}{offText}");
        }
        double tokens = batch * seq;
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            bench = "bf16-step", cpu = MatmulProbe.CpuModel(), cpu_flags = string.Join(" ", flags), threads = get_num_threads(),
            measures = hasBf16
                ? "bf16 with native bf16 dot products (AVX512_BF16/AMX) against fp32"
                : "this CPU has no AVX512_BF16/AMX: bf16 is emulated through fp32 conversions, so this measures the cost of that emulation, not a bf16 speed-up",
            matmul_256_fp32_gflops = Math.Round(probe.Fp32Gflops, 1), matmul_256_bf16_gflops = Math.Round(probe.Bf16Gflops, 1),
            matmul_256_ratio = Math.Round(probe.Speedup, 3),
            shape = $"vocab {config.VocabSize}, hidden {config.HiddenSize}, layers {config.NumLayers}, heads {config.NumHeads}/{config.NumKvHeads}, batch {batch} x seq {seq}, r {shape.R}, targets {string.Join(",", shape.Targets)}",
            rounds, steps_per_round = steps,
            fp32_tokens_per_s = Math.Round(tokens / BenchStats.Median(t32), 1), bf16_tokens_per_s = Math.Round(tokens / BenchStats.Median(t16), 1),
            bf16_over_fp32 = Math.Round(BenchStats.Median(ratios), 3), per_round = ratios.Select(x => Math.Round(x, 3)),
            fp32_last_loss = Math.Round(loss32, 4), bf16_last_loss = Math.Round(loss16, 4),
            kernels_off = off.Length > 0 ? string.Join(",", off) : null,
            bf16_kernels_off_tokens_per_s = off.Length > 0 ? Math.Round(tokens / BenchStats.Median(tOff), 1) : (double?)null,
            bf16_kernels_off_over_fp32 = off.Length > 0 ? Math.Round(BenchStats.Median(t32.Zip(tOff, (x, y) => x / y).ToList()), 3) : (double?)null,
            bf16_kernels_on_over_off = off.Length > 0 ? Math.Round(BenchStats.Median(offGains), 3) : (double?)null,
            bf16_kernels_off_last_loss = off.Length > 0 ? Math.Round(lossOff, 4) : (double?)null,
        }));
        return 0;
    }

    /// <summary>
    /// --profile: lora-step's profile table for the fp32 step, then the bf16 step (same weights), so the sections that
    /// grew in bf16 (casts, the fp32 norm and loss, attention) show side by side. GFLOP/s against the fp32 2048^3 matmul.
    /// </summary>
    static int Profile(LoraStep step32, LoraStep step16, CausalLM model, int batch, int seq, int warmup, int steps, string only)
    {
        if (only is not ("both" or "fp32" or "bf16")) throw new ArgumentException($"--only {only}: expected both, fp32 or bf16");
        double flops = StepFlops.Step(model, step32.Adapter, batch, seq);
        using var mmA = randn(2048, 2048);
        using var mmB = randn(2048, 2048);
        StepFlops.MatmulGflops(mmA, mmB);
        double mm = BenchStats.Median(Enumerable.Range(0, 3).Select(_ => StepFlops.MatmulGflops(mmA, mmB)));
        if (only != "bf16")
        {
            Console.WriteLine("== fp32 ==");
            LoraStepProfile.Run(step32, flops, warmup, steps, mm);
        }
        if (only == "fp32") return 0;
        Console.WriteLine("== bf16 (fp32 adapters, AdamW and loss) ==");
        return LoraStepProfile.Run(step16, flops, warmup, steps, mm);
    }

    /// <summary>The same weights in another dtype: a new model of that dtype, every parameter copied (and rounded).</summary>
    static CausalLM WithDtype(CausalLM source, ScalarType dtype)
    {
        var m = new CausalLM(source.Config, dtype) { MixedPrecisionTraining = dtype != ScalarType.Float32 };   // as `train` runs it
        using var _ = no_grad();
        var src = source.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in m.named_parameters()) p.copy_(src[name]);
        return m;
    }
}
