using PeftSharp.Memory;

namespace PeftSharp.Memory.Tests;

/// <summary>ZeRO arithmetic on full bf16 fine-tuning with AdamW: 2 B weights, 2 B grads, 12 B optimiser (fp32
/// master + two moments) per parameter.</summary>
public class ShardingTests
{
    const string Model = "qwen2.5-0.5b";
    const long N = 494_032_768;

    static MemoryPlan Full(int gpus, Sharding sharding, bool offload = false) =>
        MemoryPlanner.Plan(Model, new PlanRequest { Method = TuningMethod.Full, Gpus = gpus, Sharding = sharding, Offload = offload });

    static long Ceil(long a, long b) => (a + b - 1) / b;

    [Fact]
    public void Data_parallel_replicates_everything()
    {
        var p = Full(4, Sharding.None);
        Assert.Equal((2 * N, 2 * N, 12 * N), (p.WeightsBytes, p.GradientsBytes, p.OptimizerBytes));
    }

    [Fact]
    public void Zero1_shards_optimizer_state()
    {
        var p = Full(4, Sharding.Zero1);
        Assert.Equal((2 * N, 2 * N, 3 * N), (p.WeightsBytes, p.GradientsBytes, p.OptimizerBytes));
    }

    [Fact]
    public void Zero2_also_shards_gradients()
    {
        var p = Full(4, Sharding.Zero2);
        Assert.Equal((2 * N, N / 2, 3 * N), (p.WeightsBytes, p.GradientsBytes, p.OptimizerBytes));
    }

    [Theory]
    [InlineData(Sharding.Zero3)]
    [InlineData(Sharding.Fsdp)]
    public void Zero3_and_fsdp_also_shard_weights_and_gather_one_layer(Sharding sharding)
    {
        var p = Full(8, sharding);
        Assert.Equal((Ceil(2 * N, 8), Ceil(2 * N, 8), Ceil(12 * N, 8)), (p.WeightsBytes, p.GradientsBytes, p.OptimizerBytes));
        long h = 896, kv = 128, i = 4864;
        long layer = h * h + h + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h;
        Assert.Equal(2 * layer, p.GatheredLayerBytes);
    }

    [Fact]
    public void Offload_moves_optimizer_and_zero3_weights_to_the_host()
    {
        var z2 = Full(4, Sharding.Zero2, offload: true);
        Assert.Equal(0, z2.OptimizerBytes);
        Assert.Equal(12 * N, z2.HostBytes);
        Assert.Equal(2 * N, z2.WeightsBytes);
        var z3 = Full(4, Sharding.Zero3, offload: true);
        Assert.Equal(0, z3.WeightsBytes);
        Assert.Equal(12 * N + 2 * N, z3.HostBytes);
    }

    [Fact]
    public void Paged_optimizer_state_is_pageable_not_device()
    {
        var p = MemoryPlanner.Plan(Model, new PlanRequest { Method = TuningMethod.Full, Optimizer = OptimizerKind.PagedAdamW });
        Assert.Equal(8 * N, p.PageableBytes);
        Assert.Equal(4 * N, p.OptimizerBytes); // the master weights stay resident
    }
}
