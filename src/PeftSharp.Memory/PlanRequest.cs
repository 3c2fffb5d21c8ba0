namespace PeftSharp.Memory;

/// <summary>Every knob of a training run that moves memory, for <see cref="MemoryPlanner.Plan(string, PlanRequest)"/>.
/// Defaults follow PEFT / common practice: LoRA r 8 on PEFT's default targets, bf16 base, fp32 adapters, AdamW, batch 1 x
/// 512 tokens, one CUDA GPU, SDPA attention, the full fp32 loss, the nvidia-smi figure. Most properties are `peft plan`
/// flags. Invalid values are reported by <see cref="Validate"/> as a <see cref="PlanException"/> naming the field.</summary>
public sealed record PlanRequest
{
    /// <summary>What trains: the whole model or one PEFT method (default LoRA).</summary>
    public TuningMethod Method { get; init; } = TuningMethod.Lora;

    /// <summary>LoRA/DoRA rank <c>r</c> (default 8; must be positive for the LoRA family, field <c>rank</c>).</summary>
    public int Rank { get; init; } = 8;
    /// <summary>LoRA alpha: changes the scale, not the memory; kept so a plan describes a whole config.</summary>
    public double Alpha { get; init; } = 16;
    /// <summary>Which modules get adapters (LoRA family); null = PEFT's default for the model type
    /// (<see cref="TargetMatcher.DefaultFor"/>).</summary>
    public TargetMatcher? Targets { get; init; }
    /// <summary>Houlsby adapter bottleneck width (default 64; must be positive for <see cref="TuningMethod.Adapter"/>).</summary>
    public int AdapterBottleneck { get; init; } = 64;
    /// <summary>Prompt-tuning virtual tokens (default 20); they also lengthen every sequence.</summary>
    public int VirtualTokens { get; init; } = 20;

    /// <summary>LoRA dropout probability in [0, 1) (default 0): above 0 every LoRA module also keeps its 1-byte dropout mask.</summary>
    public double LoraDropout { get; init; }
    /// <summary>Storage dtype of the base weights. NF4 turns LoRA/DoRA into QLoRA/QDoRA.</summary>
    public DType WeightDtype { get; init; } = DType.Bf16;
    /// <summary>Storage dtype of adapter weights (PEFT keeps them fp32).</summary>
    public DType AdapterDtype { get; init; } = DType.Fp32;
    /// <summary>Dtype of activations and of the non-quantised parts of a QLoRA model; null = fp32 for fp32
    /// weights, else bf16.</summary>
    public DType? ComputeDtype { get; init; }
    /// <summary>Mixed precision keeps an fp32 master copy of 16-bit trainable weights; false = pure 16-bit.</summary>
    public bool MasterWeights { get; init; } = true;

    /// <summary>The optimiser, which decides the state per trainable parameter (default AdamW: 8 bytes).</summary>
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.AdamW;
    /// <summary>Sequences per micro-batch, per GPU (default 1).</summary>
    public int BatchSize { get; init; } = 1;
    /// <summary>Tokens per sequence, padded length (default 512); prompt tuning adds <see cref="VirtualTokens"/>.</summary>
    public int SequenceLength { get; init; } = 512;
    /// <summary>Micro-batches per optimiser step (default 1). Above 1 the gradients live through the next forward.</summary>
    public int GradientAccumulation { get; init; } = 1;
    /// <summary>Gradient checkpointing: each layer keeps only its input and one layer is recomputed at a time.</summary>
    public bool GradientCheckpointing { get; init; }
    /// <summary>The attention kernel (default SDPA with a padding mask, <see cref="AttentionKind.Fused"/>).</summary>
    public AttentionKind Attention { get; init; } = AttentionKind.Fused;
    /// <summary>How the loss is computed; HF transformers' default is the full fp32 upcast.</summary>
    public LossKind Loss { get; init; } = LossKind.Full;
    /// <summary>Which figure to predict (CUDA only; CPU plans are resident memory). Device = what must fit on the card.</summary>
    public MemoryView Memory { get; init; } = MemoryView.Device;
    /// <summary><c>torch.compile</c>: fused elementwise kernels keep fewer intermediates.</summary>
    public bool Compile { get; init; }
    /// <summary>Saved activations live in host memory (unsloth's offloaded gradient checkpointing with
    /// <see cref="GradientCheckpointing"/>, torch's <c>save_on_cpu</c> without): the device keeps the layer in flight.</summary>
    public bool OffloadActivations { get; init; }

    /// <summary>Data-parallel GPUs (default 1); the plan is per GPU.</summary>
    public int Gpus { get; init; } = 1;
    /// <summary>What is split across <see cref="Gpus"/> (default none: every GPU holds everything).</summary>
    public Sharding Sharding { get; init; } = Sharding.None;
    /// <summary>ZeRO/FSDP CPU offload: optimiser state (and, with ZeRO-3/FSDP, the weights) live in host memory
    /// (<see cref="MemoryPlan.HostBytes"/>). Needs <see cref="Sharding"/> when <see cref="Gpus"/> is above 1.</summary>
    public bool Offload { get; init; }

    /// <summary>Where the run executes (default CUDA): decides the activation profile and the runtime allowance. CPU plans
    /// the resident memory of this project's trainer (`peft train`).</summary>
    public DeviceKind Device { get; init; } = DeviceKind.Cuda;
    /// <summary>Fixed per-device bytes of the framework (CUDA context, kernels, allocator); null = the
    /// default of <see cref="Device"/> (CUDA: 0.8 GB context and kernels in the device view plus the 8.1 MiB cuBLAS
    /// workspace; CPU: the measured runtime terms, 239 MB). Override with a value measured on your own runs.</summary>
    public long? FrameworkOverheadBytes { get; init; }

    /// <summary>What nvidia-smi shows of a PyTorch process beyond the allocator's reservation: the CUDA context and
    /// loaded kernels (cuBLAS/cuDNN/NCCL modules), ~0.8 GB on recent GPUs. Counted only in <see cref="MemoryView.Device"/>.</summary>
    internal const long DefaultCudaOverheadBytes = 800_000_000;
    /// <summary>cuBLAS workspaces, which PyTorch allocates through its caching allocator (so they are in
    /// <c>memory_allocated</c>): the default <c>CUBLAS_WORKSPACE_CONFIG=:4096:2:16:8</c> = 2 x 4 MiB + 8 x 16 KiB
    /// (c10/cuda CublasHandlePool.cpp).</summary>
    internal const long CublasWorkspaceBytes = 2 * 4096 * 1024 + 8 * 16 * 1024;
    /// <summary>libtorch + .NET runtime of a CPU server (`peft plan --serve`), measured by bench/serve-vs-plan.sh. Training
    /// plans on CPU use <see cref="CpuRuntime.Training"/> instead.</summary>
    internal const long DefaultCpuOverheadBytes = 200_000_000;

    /// <summary>CPU, fp32, frozen dense base (not full fine-tuning, not NF4): whether the run packs its frozen weights for
    /// MKL (`peft train --pack-weights`; <see cref="CpuRuntime.PackedWeightBytes"/> adds a runtime term); null = auto,
    /// this machine's rule (<see cref="CpuRuntime.PacksWeights"/>).</summary>
    public bool? PackFrozenWeights { get; init; }

    /// <summary>
    /// CPU training: every step runs tensors of the same sizes (rows of one length filling every batch, no evaluation
    /// or generation between steps: packed or fixed-length data). The buffer cache then reuses its blocks size for size
    /// and keeps almost none of its slack idle, so the plan counts no allocator slack (measured at fixed lengths: QLoRA
    /// and LoRA at 134M used none of it, planned up to 11% above the peak with it). False (default): shapes vary from
    /// step to step, as real data's padded batches do, and the cache may hold its whole slack.
    /// </summary>
    public bool FixedShapes { get; init; }

    /// <summary>CPU: the resident set of the process once libtorch is loaded, when the caller measured it (as `peft train`
    /// does before planning), in bytes; null = 150 MB, the figure bench/runtime-memory.sh measured.</summary>
    public long? CpuRuntimeAfterLoadBytes { get; init; }

    internal bool IsQuantized => Method is TuningMethod.Qlora or TuningMethod.Qdora || WeightDtype == DType.Nf4;

    internal bool IsDora => Method is TuningMethod.Dora or TuningMethod.Qdora;

    internal bool UsesLora => Method is TuningMethod.Lora or TuningMethod.Dora or TuningMethod.Qlora or TuningMethod.Qdora;

    /// <summary>The compute dtype the plan uses: <see cref="ComputeDtype"/>, or fp32 for an fp32 non-quantised base and
    /// bf16 otherwise.</summary>
    public DType ResolvedComputeDtype => ComputeDtype ?? (WeightDtype == DType.Fp32 && !IsQuantized ? DType.Fp32 : DType.Bf16);

    /// <summary>Dtype of whatever the optimiser updates: the base weights in full fine-tuning, else adapters.</summary>
    internal DType TrainableDtype => Method == TuningMethod.Full ? WeightDtype : AdapterDtype;

    /// <summary>
    /// The runtime allowance in named terms for a model of <paramref name="vocabSize"/> (CPU: <see cref="CpuRuntime.Training"/>,
    /// where fp32 on an AMD machine adds MKL's GEMM buffers, which grow with the LM head); their sum is the fixed
    /// per-device bytes of the framework in the figure <see cref="Memory"/> names.
    /// </summary>
    internal IReadOnlyList<RuntimeTerm> RuntimeTermsFor(long vocabSize) => (FrameworkOverheadBytes, Device, Memory) switch
    {
        (long given, _, _) => [new("framework overhead", given, "given (--overhead-gb)")],
        (null, DeviceKind.Cpu, _) => CpuRuntime.Training(CpuRuntimeAfterLoadBytes, Dtypes.Is16Bit(ResolvedComputeDtype), vocabSize),
        (null, _, MemoryView.Device) =>
        [
            new("CUDA context + kernels", DefaultCudaOverheadBytes, "nvidia-smi view"),
            new("cuBLAS workspace", CublasWorkspaceBytes, "allocated through the caching allocator"),
        ],
        _ => [new("cuBLAS workspace", CublasWorkspaceBytes, "allocated through the caching allocator")],
    };

    /// <summary>Checks every field; <see cref="MemoryPlanner"/> calls it before planning.</summary>
    /// <exception cref="PlanException">A field out of range or a combination that cannot run (e.g. full fine-tuning of
    /// NF4 weights, NF4 adapters, offload across GPUs without sharding); <see cref="PlanException.Field"/> names it
    /// (<c>rank</c>, <c>batch</c>, <c>seq</c>, <c>lora_dropout</c>, ...).</exception>
    public void Validate()
    {
        if (UsesLora) Positive("rank", Rank);
        if (Method == TuningMethod.Adapter) Positive("bottleneck", AdapterBottleneck);
        if (Method == TuningMethod.PromptTuning) Positive("virtual_tokens", VirtualTokens);
        Positive("batch", BatchSize);
        Positive("seq", SequenceLength);
        Positive("gradient_accumulation", GradientAccumulation);
        Positive("gpus", Gpus);
        if (LoraDropout is < 0 or >= 1) throw new PlanException("lora_dropout", $"must be in [0, 1), got {LoraDropout}");
        if (FrameworkOverheadBytes < 0) throw new PlanException("framework_overhead", "must not be negative");
        if (CpuRuntimeAfterLoadBytes < 0) throw new PlanException("cpu_runtime_after_load", "must not be negative");
        if (Method == TuningMethod.Full && WeightDtype == DType.Nf4)
            throw new PlanException("dtype", "full fine-tuning cannot train NF4 weights; use qlora");
        if (AdapterDtype == DType.Nf4) throw new PlanException("adapter_dtype", "adapters cannot be NF4");
        if (ComputeDtype == DType.Nf4) throw new PlanException("compute_dtype", "compute cannot be NF4");
        if (Offload && Sharding == Sharding.None && Gpus > 1)
            throw new PlanException("offload", "needs zero1/zero2/zero3/fsdp sharding when gpus > 1");
    }

    static void Positive(string field, int value)
    {
        if (value <= 0) throw new PlanException(field, $"must be positive, got {value}");
    }
}
