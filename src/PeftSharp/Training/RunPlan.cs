using PeftSharp.Data;
using PeftSharp.Memory;
using PeftSharp.Training.Methods;

namespace PeftSharp.Training;

/// <summary>The memory plan of a training run as this process will execute it (CPU or CUDA, the compute dtype, the data's length).</summary>
internal static class RunPlan
{
    /// <summary>The request of a run as this process trains it: base weights and activations in the run's compute dtype
    /// (NF4 base weights for qlora/qdora), fp32 adapters, gradients and optimiser state.</summary>
    /// <remarks><paramref name="runtimeAfterLoadBytes"/>: this process's resident set once libtorch is loaded, the first term
    /// of the CPU runtime allowance (<see cref="CpuRuntime.Training"/>); null = the bench's figure.</remarks>
    public static PlanRequest Request(MethodOptions m, TrainerOptions o, int sequenceLength, long? runtimeAfterLoadBytes = null) => new()
    {
        Method = PlanNames.Method(m.Method),
        Rank = m.Rank,
        Alpha = m.Alpha,
        Targets = m.IsLora ? TargetMatcher.Parse(m.Targets, new TargetFilters
        {
            ExcludeModules = m.Exclude?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            LayersToTransform = m.LayersToTransform,
        }) : null,
        VirtualTokens = m.VirtualTokens,
        WeightDtype = m.IsQuantized ? DType.Nf4 : Dtypes.Parse(ComputeDtype.Name(o.ComputeDtype), "compute_dtype"),
        ComputeDtype = Dtypes.Parse(ComputeDtype.Name(o.ComputeDtype), "compute_dtype"),
        AdapterDtype = DType.Fp32,
        Optimizer = o.Optimizer,
        BatchSize = o.BatchSize,
        SequenceLength = Math.Max(1, sequenceLength),
        GradientAccumulation = o.GradientAccumulation,
        GradientCheckpointing = o.GradientCheckpointing,
        // SDPA: libtorch runs its flash kernel on CPU (fp32, no dropout) and a fused kernel on CUDA, with or without the
        // padding mask; no s^2 scores are kept (bench/plan-vs-measured.sh checks a padded run).
        Attention = AttentionKind.Fused,
        Device = o.DeviceKind,
        CpuRuntimeAfterLoadBytes = runtimeAfterLoadBytes,
        PackFrozenWeights = o.PackFrozenWeights,
    };

    /// <summary>
    /// The plan of a run over <paramref name="train"/>: planned at its longest row (at most the run's maximum length) and
    /// at the batches it will run: no batch holds more rows than the data has (<see cref="Data.BatchLoader"/>), so a
    /// 2-row file at --batch 16 is planned at 2 rows. Prompt tuning's virtual tokens are not added here: the planner adds
    /// them itself.
    /// </summary>
    /// <remarks>Every step has the same shapes (<see cref="PlanRequest.FixedShapes"/>: no allocator slack) when all rows
    /// have one length, they fill every batch, and nothing else runs on the model while the cache holds its slack
    /// (<paramref name="evaluates"/>: eval rows or prompts, a held-out perplexity pass; their passes and generation
    /// allocate other sizes).</remarks>
    public static MemoryPlan For(string modelDir, MethodOptions m, TrainerOptions o, IReadOnlyList<TokenSequence> train, bool evaluates = true,
                                 long? runtimeAfterLoadBytes = null)
    {
        var batches = BatchesOf(o, train.Count);
        int longest = Math.Min(o.MaxSeqLength, train.Max(t => t.Length));
        bool fixedShapes = !evaluates && train.Count % batches.BatchSize == 0 && train.All(t => Math.Min(o.MaxSeqLength, t.Length) == longest);
        return For(modelDir, m, batches, longest, runtimeAfterLoadBytes, fixedShapes);
    }

    /// <summary>The options with the batch size a run over <paramref name="rows"/> rows can fill.</summary>
    static TrainerOptions BatchesOf(TrainerOptions o, int rows) => o with { BatchSize = BatchLoader.RowsPerBatch(o.BatchSize, rows) };

    /// <summary>The plan of a run whose longest row is <paramref name="sequenceLength"/>; <paramref name="fixedShapes"/>:
    /// every step runs the same shapes (<see cref="PlanRequest.FixedShapes"/>).</summary>
    public static MemoryPlan For(string modelDir, MethodOptions m, TrainerOptions o, int sequenceLength, long? runtimeAfterLoadBytes = null, bool fixedShapes = false)
    {
        var shape = ModelShape.Load(Path.Combine(modelDir, "config.json"));
        var req = Request(m, o, sequenceLength, runtimeAfterLoadBytes) with { FixedShapes = fixedShapes };
        if (m.Method == "adapter") req = req with { AdapterBottleneck = m.Houlsby.Bottleneck(shape.Config.HiddenSize) };
        return MemoryPlanner.Plan(shape, req);
    }

    /// <summary>
    /// The plan of a DPO/ORPO run: chosen and rejected go through the model as one batch of 2 x BatchSize sequences, so the
    /// training terms are those of that batch. DPO's reference pass runs under no_grad on the same batch before the policy
    /// pass and frees its activations and logits first, so it adds nothing to the peak (its log-probs are a few floats).
    /// With --init-adapter the frozen reference copy of the adapter adds its weights, a rounding error beside the base.
    /// </summary>
    public static MemoryPlan ForPreference(string modelDir, MethodOptions m, TrainerOptions o, int pairs, int longestSequence, long? runtimeAfterLoadBytes = null) =>
        For(modelDir, m, o with { BatchSize = 2 * BatchesOf(o, pairs).BatchSize }, Math.Min(o.MaxSeqLength, longestSequence), runtimeAfterLoadBytes);
}
