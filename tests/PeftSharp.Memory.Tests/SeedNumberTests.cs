using PeftSharp.Memory;

namespace PeftSharp.Memory.Tests;

/// <summary>The worked examples, recomputed by hand.</summary>
public class SeedNumberTests
{
    const long N7B = 6_738_415_616;

    [Fact]
    public void Full_fp32_adam_on_7b_is_16_bytes_per_parameter_before_activations()
    {
        var plan = MemoryPlanner.Plan("llama-2-7b", new PlanRequest
        {
            Method = TuningMethod.Full, WeightDtype = DType.Fp32, Optimizer = OptimizerKind.AdamW,
        });
        Assert.Equal(4 * N7B, plan.WeightsBytes);
        Assert.Equal(4 * N7B, plan.GradientsBytes);
        Assert.Equal(8 * N7B, plan.OptimizerBytes);
        Assert.Equal(0, plan.MasterWeightsBytes);
        long beforeActivations = plan.WeightsBytes + plan.GradientsBytes + plan.OptimizerBytes;
        Assert.Equal(16 * N7B, beforeActivations);
        Assert.InRange(beforeActivations / 1e9, 107.8, 107.9); // 6.74B params; a round "7B" gives 112 GB
        Assert.Equal(N7B, plan.TrainableParameters);
    }

    [Fact]
    public void Lora_rank_8_on_a_4096_square_layer_has_65536_parameters()
    {
        var plan = MemoryPlanner.Plan("llama-2-7b", new PlanRequest
        {
            Rank = 8, Targets = TargetMatcher.FromNames(["model.layers.0.self_attn.q_proj"]),
        });
        Assert.Equal(8 * (4096 + 4096), plan.TrainableParameters);
        Assert.Equal(65_536, plan.TrainableParameters);
        Assert.Equal(256, 4096 * 4096 / plan.TrainableParameters);
    }

    [Fact]
    public void A_70b_base_is_about_140_gb_in_fp16()
    {
        var plan = MemoryPlanner.Plan("llama-3.1-70b", new PlanRequest { WeightDtype = DType.Fp16 });
        long loraBytes = 4 * plan.TrainableParameters; // fp32 adapters
        Assert.Equal(2 * 70_553_706_496, plan.WeightsBytes - loraBytes);
        Assert.InRange((plan.WeightsBytes - loraBytes) / 1e9, 140, 142);
    }

    [Fact]
    public void A_70b_base_in_nf4_with_double_quant_keeps_embeddings_and_head_in_16_bit()
    {
        var plan = MemoryPlanner.Plan("llama-3.1-70b", new PlanRequest { Method = TuningMethod.Qlora });
        long h = 8192, i = 28672, v = 128256, layers = 80, kv = 1024;
        long[] linears = [h * h, h * kv, h * kv, h * h, h * i, h * i, i * h];
        long nf4PerLayer = linears.Sum(n => n / 2 + n / 64 + 4 * ((n / 64 + 255) / 256));
        long sixteenBit = 2 * (2 * v * h + layers * 2 * h + h);
        long adapters = 4 * plan.TrainableParameters;
        Assert.Equal(layers * nf4PerLayer + sixteenBit + adapters, plan.WeightsBytes);
        Assert.InRange(plan.WeightsBytes / 1e9, 35, 40); // ~35 GB of NF4 blocks + 4.2 GB embeddings/head
    }

    [Fact]
    public void Nf4_double_quant_costs_4_127_bits_per_weight()
    {
        Assert.Equal(4.127, Dtypes.BytesPerElement(DType.Nf4) * 8, 3);
        long n = 4096L * 4096;
        Assert.Equal(n / 2 + n / 64 + 4 * (n / 64 / 256), Dtypes.Nf4Bytes(n));
    }

    [Fact]
    public void Lora_and_dora_on_llama_3_2_3b_q_v_rank_32()
    {
        var lora = MemoryPlanner.Plan("llama-3.2-3b", new PlanRequest { Method = TuningMethod.Lora, Rank = 32 });
        var dora = MemoryPlanner.Plan("llama-3.2-3b", new PlanRequest { Method = TuningMethod.Dora, Rank = 32 });
        long perLayer = 32 * (3072 + 3072) + 32 * (3072 + 1024);
        Assert.Equal(28 * perLayer, lora.TrainableParameters);
        Assert.Equal(9_175_040, lora.TrainableParameters);
        Assert.Equal(28 * perLayer + 28 * (3072 + 1024), dora.TrainableParameters);
        Assert.Equal(9_289_728, dora.TrainableParameters);
    }
}
