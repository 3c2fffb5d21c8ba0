namespace PeftSharp.Memory;

/// <summary>Every knob of a training run that moves memory. Defaults follow PEFT / common practice.</summary>
public sealed record PlanRequest
{
    public TuningMethod Method { get; init; } = TuningMethod.Lora;

    /// <summary>LoRA/DoRA rank.</summary>
    public int Rank { get; init; } = 8;
    /// <summary>LoRA alpha: changes the scale, not the memory; kept so a plan describes a whole config.</summary>
    public double Alpha { get; init; } = 16;
    /// <summary>Which modules get adapters (LoRA family); null = PEFT's default for the model type
    /// (<see cref="TargetMatcher.DefaultFor"/>).</summary>
    public TargetMatcher? Targets { get; init; }
    /// <summary>Houlsby bottleneck width.</summary>
    public int AdapterBottleneck { get; init; } = 64;
    /// <summary>Prompt-tuning virtual tokens; they also lengthen every sequence.</summary>
    public int VirtualTokens { get; init; } = 20;

    /// <summary>LoRA dropout: above 0 every LoRA module also keeps its 1-byte dropout mask.</summary>
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

    public OptimizerKind Optimizer { get; init; } = OptimizerKind.AdamW;
    public int BatchSize { get; init; } = 1;
    public int SequenceLength { get; init; } = 512;
    public int GradientAccumulation { get; init; } = 1;
    public bool GradientCheckpointing { get; init; }
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

    public int Gpus { get; init; } = 1;
    public Sharding Sharding { get; init; } = Sharding.None;
    public bool Offload { get; init; }

    public DeviceKind Device { get; init; } = DeviceKind.Cuda;
    /// <summary>Fixed per-device bytes of the framework (CUDA context, kernels, allocator); null = the
    /// default of <see cref="Device"/>. Override with a value measured on your own runs.</summary>
    public long? FrameworkOverheadBytes { get; init; }

    /// <summary>What nvidia-smi shows of a PyTorch process beyond the allocator's reservation: the CUDA context and
    /// loaded kernels (cuBLAS/cuDNN/NCCL modules), ~0.8 GB on recent GPUs. Counted only in <see cref="MemoryView.Device"/>.</summary>
    public const long DefaultCudaOverheadBytes = 800_000_000;
    /// <summary>cuBLAS workspaces, which PyTorch allocates through its caching allocator (so they are in
    /// <c>memory_allocated</c>): the default <c>CUBLAS_WORKSPACE_CONFIG=:4096:2:16:8</c> = 2 x 4 MiB + 8 x 16 KiB
    /// (c10/cuda CublasHandlePool.cpp).</summary>
    public const long CublasWorkspaceBytes = 2 * 4096 * 1024 + 8 * 16 * 1024;
    /// <summary>libtorch + .NET runtime of a CPU server (`peft plan --serve`), measured by bench/serve-vs-plan.sh. Training
    /// plans on CPU use <see cref="CpuRuntime.Training"/> instead.</summary>
    public const long DefaultCpuOverheadBytes = 200_000_000;

    /// <summary>CPU: the resident set of the process once libtorch is loaded, when the caller measured it (as `peft train`
    /// does before planning); null = <see cref="CpuRuntime.DefaultAfterLoadBytes"/>.</summary>
    public long? CpuRuntimeAfterLoadBytes { get; init; }

    public bool IsQuantized => Method is TuningMethod.Qlora or TuningMethod.Qdora || WeightDtype == DType.Nf4;

    public bool IsDora => Method is TuningMethod.Dora or TuningMethod.Qdora;

    public bool UsesLora => Method is TuningMethod.Lora or TuningMethod.Dora or TuningMethod.Qlora or TuningMethod.Qdora;

    public DType ResolvedComputeDtype => ComputeDtype ?? (WeightDtype == DType.Fp32 && !IsQuantized ? DType.Fp32 : DType.Bf16);

    /// <summary>Dtype of whatever the optimiser updates: the base weights in full fine-tuning, else adapters.</summary>
    public DType TrainableDtype => Method == TuningMethod.Full ? WeightDtype : AdapterDtype;

    /// <summary>The fixed per-device bytes of the framework in the figure <see cref="Memory"/> names: the runtime allowance.</summary>
    public long ResolvedOverheadBytes => ResolvedRuntimeTerms.Sum(t => t.Bytes);

    /// <summary>The runtime allowance in named terms (CPU: <see cref="CpuRuntime.Training"/>).</summary>
    public IReadOnlyList<RuntimeTerm> ResolvedRuntimeTerms => (FrameworkOverheadBytes, Device, Memory) switch
    {
        (long given, _, _) => [new("framework overhead", given, "given (--overhead-gb)")],
        (null, DeviceKind.Cpu, _) => CpuRuntime.Training(CpuRuntimeAfterLoadBytes, Dtypes.Is16Bit(ResolvedComputeDtype)),
        (null, _, MemoryView.Device) =>
        [
            new("CUDA context + kernels", DefaultCudaOverheadBytes, "nvidia-smi view"),
            new("cuBLAS workspace", CublasWorkspaceBytes, "allocated through the caching allocator"),
        ],
        _ => [new("cuBLAS workspace", CublasWorkspaceBytes, "allocated through the caching allocator")],
    };

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
