using PeftSharp.Memory;

namespace PeftSharp.Memory.Tests;

/// <summary>The bf16 compute profile of this project's CPU trainer (`train --compute-dtype bf16`), term by term.</summary>
public class Bf16ProfileTests
{
    // smollm2-135m: h 576, MLP 1536, 30 layers, 9 heads of 64, 3 key/value heads (v_proj out 192), vocab 49152, tied.
    const long H = 576, I = 1536, Layers = 30, Vocab = 49152, KvOut = 192;
    const long S = 100, B = 2;

    static PlanRequest Lora(DType compute, DType weights) => new()
    {
        Device = DeviceKind.Cpu, Method = weights == DType.Nf4 ? TuningMethod.Qlora : TuningMethod.Lora, Rank = 8,
        Targets = TargetMatcher.Parse("q_proj,v_proj"), WeightDtype = weights, ComputeDtype = compute, AdapterDtype = DType.Fp32,
        BatchSize = (int)B, SequenceLength = (int)S,
    };

    static readonly long Trainable = Layers * 8 * ((H + H) + (H + KvOut));

    [Fact]
    public void Bf16_plan_keeps_a_2_byte_base_and_fp32_adapters_gradients_and_adam()
    {
        var shape = Presets.Resolve("smollm2-135m");
        var p = MemoryPlanner.Plan(shape, Lora(DType.Bf16, DType.Bf16));
        Assert.StartsWith("torchsharp-cpu-bf16", p.ActivationProfile);
        Assert.Equal(Trainable, p.TrainableParameters);
        Assert.Equal(2 * shape.TotalParameters + 4 * Trainable, p.WeightsBytes);
        Assert.Equal(4 * Trainable, p.GradientsBytes);
        Assert.Equal(8 * Trainable, p.OptimizerBytes);       // two fp32 moments
        Assert.Equal(0, p.MasterWeightsBytes);                // the adapters are fp32 already: no master copy
        // Per layer: both norms' fp32 upcasts (with PeftSharp's AVX-512 kernels: the norm kernel's bf16 inputs) and 4 bf16
        // attention tensors per h, 3 bf16 MLP tensors per i (the SwiGLU kernel's 2: gate and up), and the bf16 input each
        // LoRA module keeps for its A matrix, which multiplies it in bf16 while training (q_proj and v_proj both read h:
        // counted per module, an upper bound).
        bool k = ActivationModel.CpuKernels;
        // With the kernels k and v are kept at the key/value width (KvOut), as the kernel reads grouped heads.
        long perLayer = S * B * H * ((k ? 2 * 2 : 2 * 4) + (k ? 2 : 4) * 2) + (k ? S * B * KvOut * 2 * 2 : 0) + S * B * I * (k ? 2 : 3) * 2 + S * B * (H + H) * 2;
        Assert.Equal(Layers * perLayer, p.ActivationsBytes);
        // fp32 logits (the head computes the target's logit in fp32 and returns an fp32 copy) plus three fp32 b*s*V
        // buffers for the loss (log-softmax, its gradient, the logits' gradient); the loss kernel keeps the logits'
        // gradient only, and the head's backward casts it to bf16 (1.5).
        Assert.Equal((long)(B * S * Vocab * (4 + (k ? 1.5 : 3) * 4)), p.LogitsBytes);
    }

    [Fact]
    public void Bf16_plan_is_below_the_fp32_plan_by_the_base_and_activation_halving()
    {
        var shape = Presets.Resolve("smollm2-135m");
        var bf16 = MemoryPlanner.Plan(shape, Lora(DType.Bf16, DType.Bf16));
        var fp32 = MemoryPlanner.Plan(shape, Lora(DType.Fp32, DType.Fp32));
        Assert.StartsWith("torchsharp-cpu-fp32", fp32.ActivationProfile);
        Assert.Equal(2 * shape.TotalParameters, fp32.WeightsBytes - bf16.WeightsBytes);
        Assert.Equal(fp32.GradientsBytes, bf16.GradientsBytes);
        Assert.Equal(fp32.OptimizerBytes, bf16.OptimizerBytes);
        bool k = ActivationModel.CpuKernels;
        Assert.Equal(Layers * 4 * ((k ? 6 : 9) * S * B * H + (k ? 2 * S * B * KvOut : 0) + (k ? 3 : 4) * S * B * I), fp32.ActivationsBytes);
        if (!k) Assert.Equal(fp32.LogitsBytes, bf16.LogitsBytes);   // fp32 logits in both
        Assert.True(bf16.TotalBytes < fp32.TotalBytes);
    }

    /// <summary>
    /// The demo's bf16 run missed ~19 MB: not tensors (the demo's are ~20 MB in all) but glibc's arenas, which kept freed
    /// blocks under the 16-bit kernels. The term is the arena growth of a bf16 run minus that of the same fp32 run, read from
    /// bench/runtime-memory.sh's probes (MB: after the model loaded, at the last step); only 16-bit CPU plans carry it.
    /// </summary>
    [Fact]
    public void Sixteen_bit_cpu_plans_add_the_measured_arena_growth_over_fp32()
    {
        (double Loaded, double LastStep) bf16Arena = (62.2, 93.6), fp32Arena = (62.6, 74.6);
        double measured = (bf16Arena.LastStep - bf16Arena.Loaded) - (fp32Arena.LastStep - fp32Arena.Loaded);
        Assert.Equal(CpuRuntime.SixteenBitArenaBytes / 1e6, measured, 0.05);

        var shape = Presets.Resolve("smollm2-135m");
        var bf16 = MemoryPlanner.Plan(shape, Lora(DType.Bf16, DType.Nf4));
        var fp32 = MemoryPlanner.Plan(shape, Lora(DType.Fp32, DType.Nf4));
        // fp32 compute on an AMD planning machine also counts MKL's Intel-path GEMM buffers, which bf16 (oneDNN) does not.
        Assert.Equal(CpuRuntime.SixteenBitArenaBytes - (CpuRuntime.MklIntelPath ? CpuRuntime.MklIntelPathBytes(shape.Config.VocabSize) : 0), bf16.FrameworkOverheadBytes - fp32.FrameworkOverheadBytes);
        Assert.Equal(CpuRuntime.SixteenBitArenaBytes, bf16.RuntimeTerms.Single(t => t.Name.Contains("16-bit")).Bytes);
        Assert.DoesNotContain(fp32.RuntimeTerms, t => t.Name.Contains("16-bit"));
        Assert.Equal(bf16.FrameworkOverheadBytes, bf16.RuntimeTerms.Sum(t => t.Bytes));
        // A GPU plan has its own runtime terms: the CPU allocator's figure is not among them.
        Assert.DoesNotContain(MemoryPlanner.Plan(shape, Lora(DType.Bf16, DType.Nf4) with { Device = DeviceKind.Cuda }).RuntimeTerms, t => t.Name.Contains("16-bit"));
    }

    [Fact]
    public void Qlora_in_bf16_keeps_the_rest_of_the_model_and_the_dequantised_layer_in_bf16()
    {
        var shape = Presets.Resolve("smollm2-135m");
        var p = MemoryPlanner.Plan(shape, Lora(DType.Bf16, DType.Nf4));
        var decoderLinears = shape.Modules.Where(m => m.Kind == ModuleKind.Linear && m.Layer is not null).ToList();
        long rest = shape.TotalParameters - decoderLinears.Sum(m => m.Parameters);
        Assert.Equal(decoderLinears.Sum(m => Dtypes.Nf4Bytes(m.WeightElements)) + 2 * rest + 4 * Trainable, p.WeightsBytes);
        Assert.Equal(2 * I * H, p.DequantBufferBytes);   // the largest projection (MLP, 1536 x 576) dequantised to bf16
        Assert.StartsWith("torchsharp-cpu-bf16", p.ActivationProfile);
    }
}
