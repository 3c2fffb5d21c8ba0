namespace PeftSharp.Memory;

/// <summary>
/// The memory of one training run. The four residents and <see cref="OtherBytes"/> are per GPU after sharding and
/// offload and sum to <see cref="TotalBytes"/>. Offloaded state is in <see cref="HostBytes"/> (all GPUs together);
/// paged optimiser state is in <see cref="PageableBytes"/>, outside the device total.
/// </summary>
public sealed record MemoryPlan
{
    public required string Model { get; init; }
    public required PlanRequest Request { get; init; }
    public required long TotalParameters { get; init; }
    public required long TrainableParameters { get; init; }
    public required IReadOnlyList<TrainableTensor> TrainableTensors { get; init; }

    public required long WeightsBytes { get; init; }
    public required long GradientsBytes { get; init; }
    /// <summary>Optimiser moments plus, under mixed precision, the fp32 master weights (as ZeRO counts them).</summary>
    public required long OptimizerBytes { get; init; }
    public required long MasterWeightsBytes { get; init; }
    public required long ActivationsBytes { get; init; }

    public required long LogitsBytes { get; init; }
    /// <summary>QLoRA: the largest quantised layer dequantised to the compute dtype for its matmul.</summary>
    public required long DequantBufferBytes { get; init; }
    /// <summary>ZeRO-3/FSDP: one decoder block's weights all-gathered for its forward/backward.</summary>
    public required long GatheredLayerBytes { get; init; }
    public required long FrameworkOverheadBytes { get; init; }

    public required long HostBytes { get; init; }
    public required long PageableBytes { get; init; }

    /// <summary>What serving the result costs beyond the base model.</summary>
    public required string InferenceOverhead { get; init; }

    public long OtherBytes => LogitsBytes + DequantBufferBytes + GatheredLayerBytes + FrameworkOverheadBytes;

    public long TotalBytes => WeightsBytes + GradientsBytes + OptimizerBytes + ActivationsBytes + OtherBytes;

    public double TrainablePercent => 100.0 * TrainableParameters / TotalParameters;

    public bool Fits(long gpuBytes) => TotalBytes <= gpuBytes;

    /// <summary>Bytes left on a GPU of this size (negative when it does not fit).</summary>
    public long Headroom(long gpuBytes) => gpuBytes - TotalBytes;
}
