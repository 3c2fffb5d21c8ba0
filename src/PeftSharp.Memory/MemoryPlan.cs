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
    /// <summary>The gradients' share of the peak. Equal to <see cref="GradientsBytes"/> unless the trainer frees them
    /// before each forward (PyTorch) and does not accumulate: then they build up while backward frees the activations
    /// and loss buffers, and only what exceeds those adds to the peak.</summary>
    public long GradientsAtPeakBytes { get; init; }
    /// <summary>Optimiser moments plus, under mixed precision, the fp32 master weights (as ZeRO counts them).</summary>
    public required long OptimizerBytes { get; init; }
    public required long MasterWeightsBytes { get; init; }
    public required long ActivationsBytes { get; init; }
    /// <summary>The activations' share of the peak: <see cref="ActivationsBytes"/>, less the recomputed layer where it
    /// only exists after the loss buffers are freed (then the larger of the two counts).</summary>
    public long ActivationsAtPeakBytes { get; init; }

    public required long LogitsBytes { get; init; }
    /// <summary>QLoRA: the largest quantised layer dequantised to the compute dtype for its matmul; on CPU with gradient
    /// checkpointing also one decoder layer's quantised weights kept from the recomputed forward for its backward.</summary>
    public required long DequantBufferBytes { get; init; }
    /// <summary>ZeRO-3/FSDP: one decoder block's weights all-gathered for its forward/backward.</summary>
    public required long GatheredLayerBytes { get; init; }
    /// <summary>The runtime allowance: what the process holds besides tensors (the sum of <see cref="RuntimeTerms"/>).</summary>
    public required long FrameworkOverheadBytes { get; init; }
    /// <summary>The runtime allowance in named terms (on CPU measured by bench/runtime-memory.sh; see <see cref="CpuRuntime"/>).</summary>
    public IReadOnlyList<RuntimeTerm> RuntimeTerms { get; init; } = [];
    /// <summary>The allowance's part present before the model loads (what a run reports as its measured runtime); the
    /// whole allowance where it has no such term.</summary>
    public long RuntimeAfterLoadBytes => RuntimeTerms.FirstOrDefault(t => t.Name == CpuRuntime.AfterLoadName)?.Bytes ?? FrameworkOverheadBytes;
    /// <summary>What the run adds to the runtime after load (loading, .NET heap, arenas, growth, save): measured runs count it
    /// with activations and buffers, as the rest of the peak.</summary>
    public long RuntimeGrowthBytes => FrameworkOverheadBytes - RuntimeAfterLoadBytes;
    /// <summary>What the optimiser step allocates on top of weights, gradients and state (foreach AdamW's temporary).</summary>
    public long OptimizerStepTemporaryBytes { get; init; }
    /// <summary>What the CUDA caching allocator reserves beyond the tensors (in the reserved and device figures).</summary>
    public long AllocatorSlackBytes { get; init; }

    public required long HostBytes { get; init; }
    public required long PageableBytes { get; init; }

    /// <summary>Which activation profile the plan used: transformers, torchsharp-cpu-fp32 or korthikanti.</summary>
    public string ActivationProfile { get; init; } = "";

    /// <summary>What serving the result costs beyond the base model.</summary>
    public required string InferenceOverhead { get; init; }

    public long OtherBytes => LogitsBytes + DequantBufferBytes + GatheredLayerBytes + AllocatorSlackBytes + FrameworkOverheadBytes;

    /// <summary>Peak of the forward/backward pass (the residents above).</summary>
    public long PassBytes => WeightsBytes + GradientsAtPeakBytes + OptimizerBytes + ActivationsAtPeakBytes + OtherBytes;

    /// <summary>Peak of the optimiser step: weights, every gradient, state and the step's temporary (no activations).</summary>
    public long StepBytes => WeightsBytes + GradientsBytes + OptimizerBytes + OptimizerStepTemporaryBytes
        + GatheredLayerBytes + AllocatorSlackBytes + FrameworkOverheadBytes;

    /// <summary>Which moment sets the peak: "forward/backward" or "optimizer step".</summary>
    public string PeakPhase => StepBytes > PassBytes ? "optimizer step" : "forward/backward";

    public long TotalBytes => Math.Max(PassBytes, StepBytes);

    public double TrainablePercent => 100.0 * TrainableParameters / TotalParameters;

    public bool Fits(long gpuBytes) => TotalBytes <= gpuBytes;

    /// <summary>Bytes left on a GPU of this size (negative when it does not fit).</summary>
    public long Headroom(long gpuBytes) => gpuBytes - TotalBytes;
}
