namespace PeftSharp.Memory;

/// <summary>
/// The memory of one training run, from <see cref="MemoryPlanner"/>. Every figure is in bytes (divide by 1e9 for the
/// GB `peft plan` prints). The four residents and <see cref="OtherBytes"/> are per GPU after sharding and
/// offload and sum to <see cref="TotalBytes"/>. Offloaded state is in <see cref="HostBytes"/> (all GPUs together);
/// paged optimiser state is in <see cref="PageableBytes"/>, outside the device total.
/// </summary>
public sealed record MemoryPlan
{
    /// <summary>The model's name: the preset, or the folder holding its config.json.</summary>
    public required string Model { get; init; }
    /// <summary>The request the plan answers.</summary>
    public required PlanRequest Request { get; init; }
    /// <summary>Parameters of the base model (a tied output head counted once).</summary>
    public required long TotalParameters { get; init; }
    /// <summary>Parameters the optimiser updates: adapter parameters, or every base parameter in full fine-tuning.</summary>
    public required long TrainableParameters { get; init; }
    /// <summary>The trained tensors one by one, named as PEFT saves them (8-bit optimisers size their state per tensor).</summary>
    public required IReadOnlyList<TrainableTensor> TrainableTensors { get; init; }

    /// <summary>Base weights in their storage dtype (QLoRA: NF4 + double quant for the decoder-block Linears, the rest
    /// in the compute dtype) plus the adapters in their dtype; per GPU after ZeRO-3/FSDP sharding and offload.</summary>
    public required long WeightsBytes { get; init; }
    /// <summary>Gradients of the trainable parameters in their dtype; per GPU after ZeRO-2 and above.</summary>
    public required long GradientsBytes { get; init; }
    /// <summary>The gradients' share of the peak. Equal to <see cref="GradientsBytes"/> unless the trainer frees them
    /// before each forward (PyTorch) and does not accumulate: then they build up while backward frees the activations
    /// and loss buffers, and only what exceeds those adds to the peak.</summary>
    public long GradientsAtPeakBytes { get; init; }
    /// <summary>Optimiser moments plus, under mixed precision, the fp32 master weights (as ZeRO counts them).</summary>
    public required long OptimizerBytes { get; init; }
    /// <summary>The fp32 master copy of 16-bit trainable weights under mixed precision (part of
    /// <see cref="OptimizerBytes"/>, before sharding); 0 for fp32 adapters or pure 16-bit training.</summary>
    public required long MasterWeightsBytes { get; init; }
    /// <summary>Tensors kept for the backward pass over all layers (with checkpointing: the layer inputs plus one layer
    /// being recomputed; offloaded ones are in <see cref="HostBytes"/>).</summary>
    public required long ActivationsBytes { get; init; }
    /// <summary>The activations' share of the peak: <see cref="ActivationsBytes"/>, less the recomputed layer where it
    /// only exists after the loss buffers are freed (then the larger of the two counts).</summary>
    public long ActivationsAtPeakBytes { get; init; }

    /// <summary>The logits and the loss buffers around them at the start of backward (see <see cref="LossKind"/>).</summary>
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

    /// <summary>Host (CPU) memory of offloaded optimiser state, weights and activations, all GPUs together; not in
    /// <see cref="TotalBytes"/>.</summary>
    public required long HostBytes { get; init; }
    /// <summary>Paged optimisers' moments in unified memory, which the driver evicts to the host under pressure; not in
    /// <see cref="TotalBytes"/>.</summary>
    public required long PageableBytes { get; init; }

    /// <summary>Which activation profile the plan used: <c>transformers</c> (CUDA), <c>torchsharp-cpu-fp32</c> or
    /// <c>torchsharp-cpu-bf16</c> (CPU, by compute dtype; <c>-kernels</c> appended where PeftSharp's C# kernels run: AVX-512F or AVX2 + FMA).</summary>
    public string ActivationProfile { get; init; } = "";
    /// <summary>On CPU, the paths the model's layers take (CpuLayerPaths.Describe: attention kernel / SDPA / explicit
    /// scores, SwiGLU kernel or op chain, soft-caps); empty elsewhere.</summary>
    internal string ActivationPaths { get; init; } = "";

    /// <summary>What serving the result costs beyond the base model, in words (e.g. "0 merged, +0.26% unmerged").</summary>
    public required string InferenceOverhead { get; init; }

    /// <summary>Everything besides the four residents: logits and loss buffers, the QLoRA dequantisation buffer, the
    /// gathered ZeRO-3 layer, allocator slack and the runtime allowance.</summary>
    public long OtherBytes => SaturatingBytes.Sum(LogitsBytes, DequantBufferBytes, GatheredLayerBytes, AllocatorSlackBytes, FrameworkOverheadBytes);

    /// <summary>Peak of the forward/backward pass (the residents above).</summary>
    public long PassBytes => SaturatingBytes.Sum(WeightsBytes, GradientsAtPeakBytes, OptimizerBytes, ActivationsAtPeakBytes, OtherBytes);

    /// <summary>Peak of the optimiser step: weights, every gradient, state and the step's temporary (no activations).</summary>
    public long StepBytes => SaturatingBytes.Sum(WeightsBytes, GradientsBytes, OptimizerBytes, OptimizerStepTemporaryBytes,
        GatheredLayerBytes, AllocatorSlackBytes, FrameworkOverheadBytes);

    /// <summary>Which moment sets the peak: "forward/backward" or "optimizer step".</summary>
    public string PeakPhase => StepBytes > PassBytes ? "optimizer step" : "forward/backward";

    /// <summary>The peak per GPU, what must fit: the larger of <see cref="PassBytes"/> and <see cref="StepBytes"/>.</summary>
    public long TotalBytes => Math.Max(PassBytes, StepBytes);

    /// <summary>Trainable parameters as a percentage (0-100) of <see cref="TotalParameters"/>.</summary>
    public double TrainablePercent => 100.0 * TrainableParameters / TotalParameters;

    /// <summary>Whether the peak fits on a GPU with this many bytes (e.g. a <see cref="GpuSpec.Bytes"/>).</summary>
    public bool Fits(long gpuBytes) => TotalBytes <= gpuBytes;

    /// <summary>Bytes left on a GPU with <paramref name="gpuBytes"/> bytes (negative when it does not fit).</summary>
    public long Headroom(long gpuBytes) => gpuBytes - TotalBytes;
}
