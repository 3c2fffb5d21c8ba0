namespace PeftSharp.Memory;

/// <summary>The knobs of serving one base with many LoRA adapters (continuous batching, one KV cache row per sequence),
/// for <see cref="ServePlanner"/>; each is a `peft plan --serve` flag. <see cref="Validate"/> names a bad field.</summary>
public sealed record ServeRequest
{
    /// <summary>Sequences decoded together.</summary>
    public int MaxBatch { get; init; } = 32;
    /// <summary>Tokens per sequence (prompt + generated) the KV cache must hold.</summary>
    public int Context { get; init; } = 2048;
    /// <summary>Adapters kept resident.</summary>
    public int Adapters { get; init; } = 1;
    /// <summary>Largest adapter rank: every resident adapter is counted at it.</summary>
    public int MaxRank { get; init; } = 16;
    /// <summary>Modules the adapters adapt; null = PEFT's default for the model type.</summary>
    public TargetMatcher? Targets { get; init; }
    /// <summary>Base weight dtype (NF4 = a quantised base).</summary>
    public DType WeightDtype { get; init; } = DType.Bf16;
    /// <summary>Compute dtype of activations and adapters; null = fp32 for fp32 weights, else bf16.</summary>
    public DType? ComputeDtype { get; init; }
    /// <summary>KV cache dtype; null = the compute dtype.</summary>
    public DType? KvDtype { get; init; }
    /// <summary>Adapter dtype once loaded; null = the compute dtype.</summary>
    public DType? AdapterDtype { get; init; }
    /// <summary>Prompt tokens of one sequence prefilled at once; null = a whole context (`peft serve` prefills a prompt
    /// whole).</summary>
    public int? PrefillChunk { get; init; }
    /// <summary>The default of <see cref="MaxPrefillTokens"/>, and of `peft serve --max-prefill-tokens`.</summary>
    public const int DefaultMaxPrefillTokens = 2048;
    /// <summary>Most tokens one batched prefill forward holds: waiting prompts prefilled together, left-padded, count
    /// rows x the longest prompt (`peft serve --max-prefill-tokens`, the same default). A single longer prompt goes
    /// alone, so the plan counts at least one <see cref="PrefillChunk"/>.</summary>
    public int MaxPrefillTokens { get; init; } = DefaultMaxPrefillTokens;
    /// <summary>The KV cache's buffers are rebuilt (transformers' DynamicCache concatenates every step; this project's
    /// KvCache when rows join or leave the batch): while a layer is rebuilt, its old and new tensors coexist. False for a
    /// preallocated (paged) cache.</summary>
    public bool ConcatenatedCache { get; init; } = true;
    /// <summary>Where the server runs (default CUDA); decides the default runtime allowance.</summary>
    public DeviceKind Device { get; init; } = DeviceKind.Cuda;
    /// <summary>Fixed bytes of the runtime; null = the device's default (CUDA: 0.8 GB context + kernels and the 8.1 MiB
    /// cuBLAS workspace; CPU: 200 MB of libtorch + .NET and 136 MB the server grows by while serving, measured by
    /// bench/serve-vs-plan.sh).</summary>
    public long? FrameworkOverheadBytes { get; init; }

    internal DType ResolvedCompute => ComputeDtype ?? (WeightDtype == DType.Fp32 ? DType.Fp32 : DType.Bf16);
    internal DType ResolvedKv => KvDtype ?? ResolvedCompute;
    internal DType ResolvedAdapter => AdapterDtype ?? ResolvedCompute;
    internal int ResolvedPrefillChunk => PrefillChunk ?? Context;
    /// <summary>The largest prefill forward: one sequence's chunk or a batched forward of the budget (which cannot
    /// hold more than every row's whole context).</summary>
    internal long ResolvedPrefillTokens => Math.Max(Math.Min(ResolvedPrefillChunk, Context), Math.Min(MaxPrefillTokens, (long)MaxBatch * Context));

    internal long ResolvedOverheadBytes => FrameworkOverheadBytes
        ?? (Device == DeviceKind.Cuda ? PlanRequest.DefaultCudaOverheadBytes + PlanRequest.CublasWorkspaceBytes
            : PlanRequest.DefaultCpuOverheadBytes + CpuServerRuntimeBytes);

    /// <summary>
    /// What `peft serve`'s process grows by while it serves, beyond every tensor (HTTP server, managed heap, native
    /// arenas of request handling), on CPU where it shares the memory with the model (on a GPU it is host memory).
    /// bench/serve-vs-plan.sh: the peak resident set less the buffer cache's peak in use, the adapters and the 200 MB
    /// runtime was 127 MiB (32 x 960 + 32 tokens) and 136 MiB (32 x 448 + 256); 134 and 159 MiB stayed resident after
    /// the load with the server stopped and idle buffers given back.
    /// </summary>
    internal const long CpuServerRuntimeBytes = 136_000_000;

    /// <summary>Checks every field; <see cref="ServePlanner"/> calls it before planning.</summary>
    /// <exception cref="PlanException">A count that must be positive (<c>max_batch</c>, <c>context</c>, <c>max_rank</c>,
    /// <c>prefill_chunk</c>, <c>max_prefill_tokens</c>), negative <c>adapters</c>, or an NF4 KV cache, compute or adapter dtype.</exception>
    public void Validate()
    {
        Positive("max_batch", MaxBatch);
        Positive("context", Context);
        Positive("max_rank", MaxRank);
        if (Adapters < 0) throw new PlanException("adapters", $"must not be negative, got {Adapters}");
        if (PrefillChunk is { } c) Positive("prefill_chunk", c);
        Positive("max_prefill_tokens", MaxPrefillTokens);
        if (KvDtype == DType.Nf4) throw new PlanException("kv_dtype", "the KV cache cannot be NF4");
        if (ComputeDtype == DType.Nf4) throw new PlanException("compute_dtype", "compute cannot be NF4");
        if (AdapterDtype == DType.Nf4) throw new PlanException("adapter_dtype", "adapters cannot be NF4");
        if (FrameworkOverheadBytes < 0) throw new PlanException("framework_overhead", "must not be negative");
    }

    static void Positive(string field, int value)
    {
        if (value <= 0) throw new PlanException(field, $"must be positive, got {value}");
    }
}

/// <summary>The memory of a server at full load, and how many sequences of <see cref="ServeRequest.Context"/> fit. Every
/// figure is in bytes.</summary>
public sealed record ServePlan
{
    /// <summary>The model's name: the preset, or the folder holding its config.json.</summary>
    public required string Model { get; init; }
    /// <summary>The request the plan answers.</summary>
    public required ServeRequest Request { get; init; }
    /// <summary>The base weights in <see cref="ServeRequest.WeightDtype"/> (NF4: decoder-block Linears quantised, the
    /// rest in the compute dtype).</summary>
    public required long WeightsBytes { get; init; }
    /// <summary>Keys and values of one token over all layers: 2 x layers x kv_heads x head_dim x dtype (GQA-aware).</summary>
    public required long KvBytesPerToken { get; init; }
    /// <summary>max_batch sequences of cache (<see cref="KvBytesPerSequence"/> each).</summary>
    public required long KvCacheBytes { get; init; }
    /// <summary>Every resident adapter at the largest rank: r x (in + out) per adapted module.</summary>
    public required long AdaptersBytes { get; init; }
    /// <summary>One adapter at <see cref="ServeRequest.MaxRank"/> in its dtype.</summary>
    public required long AdapterBytesEach { get; init; }
    /// <summary>The largest prefill forward's working set (<see cref="ServeRequest.MaxPrefillTokens"/> tokens, or one
    /// longer chunk; inference keeps no activations for backward; one layer at a time), with GQA's keys and values of
    /// those tokens repeated to every query head.</summary>
    public required long PrefillBytes { get; init; }
    /// <summary>A prompt-scoring prefill (`/v1/completions` with `echo` and `logprobs`): one row's chunk of
    /// <see cref="ServePlanner.ScoringChunkTokens"/> tokens through the model with every position's logits kept (in the
    /// compute dtype, an fp32 copy where that differs, and their fp32 log-softmax), beside that chunk's layer working set.
    /// Any client may ask for it, so it counts as a transient like <see cref="PrefillBytes"/>.</summary>
    public long ScoringBytes { get; init; }
    /// <summary>The tokens of that scoring chunk.</summary>
    internal long ScoringTokens { get; init; }
    /// <summary>The cache's rebuild transient at full load: one layer's copy (a join or rows leaving rebuilds the cache
    /// one layer at a time, the joining rows' caches released layer by layer). Counted in <see cref="TotalBytes"/> only
    /// where larger than <see cref="PrefillBytes"/> (see <see cref="TransientBytes"/>).</summary>
    public required long KvGrowthBytes { get; init; }
    /// <summary>The runtime allowance (see <see cref="ServeRequest.FrameworkOverheadBytes"/>).</summary>
    public required long FrameworkOverheadBytes { get; init; }

    /// <summary>Everything but the cache: what a card must hold before the first sequence (its prefill included).</summary>
    public long FixedBytes => WeightsBytes + AdaptersBytes + PrefillBytes + FrameworkOverheadBytes;
    /// <summary>
    /// The largest transient beside the cache: a prefill forward's working set (a scoring prefill's included) or the
    /// cache's rebuild, whichever is larger, since they never coincide. `peft serve` runs one thing at a time on its worker: a prefill forward's
    /// activations are freed when the forward returns, before its rows join (the join's rebuild), and a decode step's
    /// rebuild (rows leaving) runs between forwards. The rows being prefilled are among <see cref="ServeRequest.MaxBatch"/>
    /// (the scheduler admits no more), so their own cache, at most their context each, is inside <see cref="KvCacheBytes"/>.
    /// </summary>
    public long TransientBytes => Math.Max(Math.Max(PrefillBytes, ScoringBytes), KvGrowthBytes);
    /// <summary>The peak at full load: weights, adapters, runtime, the whole KV cache and the largest transient.</summary>
    public long TotalBytes => SaturatingBytes.Sum(WeightsBytes, AdaptersBytes, FrameworkOverheadBytes, KvCacheBytes, TransientBytes);
    /// <summary>The KV cache of one sequence of the full <see cref="ServeRequest.Context"/>: a sliding-window layer holds
    /// at most its window (the window - 1 keys a later query can see, and the step's own), the others the context.</summary>
    public long KvBytesPerSequence => KvLayerSlots > 0 ? KvLayerSlots * KvBytesPerTokenPerLayer : KvBytesPerToken * Request.Context;

    /// <summary>Slots of one sequence summed over the layers: context per full-attention layer, min(context, window)
    /// per sliding-window layer (0: not counted, every layer the context).</summary>
    internal long KvLayerSlots { get; init; }
    /// <summary>The slots of the widest layer (the context unless every layer has a shorter window): what the cache's
    /// one-layer rebuild copies per row.</summary>
    internal long WidestLayerSlots { get; init; }

    /// <summary>Sequences of the full context whose cache (with its growth transients) fits beside the fixed part on a
    /// GPU with <paramref name="gpuBytes"/> bytes; 0 when not even the fixed part fits.</summary>
    public long ConcurrentSequences(long gpuBytes)
    {
        long n = Math.Max(0, (gpuBytes - FixedBytes) / KvBytesPerSequence);
        while (n > 0 && Need(n) > gpuBytes) n--;
        return n;
    }

    /// <summary>The peak with <paramref name="rows"/> sequences (<see cref="TotalBytes"/>'s rule at that load).</summary>
    long Need(long rows) => FixedBytes - PrefillBytes + rows * KvBytesPerSequence + Math.Max(Math.Max(PrefillBytes, ScoringBytes), Growth(rows));

    /// <summary>One layer's copy of the cache of <paramref name="rows"/> rows.</summary>
    long Growth(long rows) => Request.ConcatenatedCache ? rows * (WidestLayerSlots > 0 ? WidestLayerSlots : Request.Context) * KvBytesPerTokenPerLayer : 0;

    /// <summary>Keys and values of one token in one layer.</summary>
    public required long KvBytesPerTokenPerLayer { get; init; }

    /// <summary>Whether the server at full load (<see cref="TotalBytes"/>) fits on a GPU with this many bytes.</summary>
    public bool Fits(long gpuBytes) => TotalBytes <= gpuBytes;
}

/// <summary>
/// Serving memory: weights, KV cache, resident adapters, the largest prefill forward (waiting prompts are prefilled
/// together up to <see cref="ServeRequest.MaxPrefillTokens"/> padded tokens, as `peft serve` bounds them). Prefill per layer holds, in the compute
/// dtype, the residual and normed hidden states, q and the attention output (4 x h), the new keys and values (2 x kv
/// width) and the MLP's gate, up and product (3 x i); the logits are kept for the last token only (fp32, V per row,
/// as transformers' generate and this project's server compute them). With GQA, a prefill forward repeats its tokens'
/// keys and values to every query head before attention (Models/Attention's repeat_interleave over the layer's cache,
/// which holds the prefilled rows alone: 2 x heads x head_dim per token); a decode step reads the cache in place, each
/// key/value head with its group of queries (transformers' sdpa path repeats the whole cache there, this server does not).
/// A scored prompt (echo + logprobs) is prefilled alone in chunks whose every position's logits are kept
/// (<see cref="ServePlan.ScoringBytes"/>). The prefill forward and the cache's rebuild (one layer copied when rows join
/// or leave) never coincide, so the largest of them is counted (<see cref="ServePlan.TransientBytes"/>).
/// </summary>
public static class ServePlanner
{
    /// <summary>The most fp32 logits one scoring chunk holds (its log-softmax holds as many again): `peft serve`'s
    /// Scheduling/PromptScorer feeds a scored prompt in chunks of <see cref="ScoringChunkTokens"/> tokens, so a long
    /// prompt of a large vocabulary (1 GiB of logits at 2,048 tokens of 128k) never holds them all.</summary>
    internal const long ScoringLogitsBudgetBytes = 64L << 20;

    /// <summary>Tokens per scoring forward: the logits budget's rows, at most the prefill budget's tokens.</summary>
    internal static int ScoringChunkTokens(long vocab, long maxPrefillTokens) =>
        (int)Math.Clamp(ScoringLogitsBudgetBytes / (4L * vocab), 1, Math.Max(1, maxPrefillTokens));

    /// <summary>Plans a server of a preset model, a model given by its config.json, or a model folder holding one.</summary>
    /// <param name="presetOrConfigPath">A name from <see cref="Presets.Names"/>, a config.json path, or a folder holding one.</param>
    /// <param name="request">The server's load; <see cref="ServeRequest.Validate"/> is applied first.</param>
    /// <exception cref="PlanException">An unknown preset, an invalid config.json or request (the field is named), or
    /// target modules that match nothing while <see cref="ServeRequest.Adapters"/> is above 0.</exception>
    public static ServePlan Plan(string presetOrConfigPath, ServeRequest request) => Plan(Presets.Resolve(presetOrConfigPath), request);

    /// <summary>Plans a server of a model shape.</summary>
    /// <param name="model">The model's modules and config.</param>
    /// <param name="r">The server's load; <see cref="ServeRequest.Validate"/> is applied first.</param>
    /// <exception cref="PlanException">An invalid request (the field is named), or target modules that match nothing
    /// while <see cref="ServeRequest.Adapters"/> is above 0.</exception>
    public static ServePlan Plan(ModelShape model, ServeRequest r)
    {
        r.Validate();
        var c = model.Config;
        long kvWidth = (long)c.KeyValueHeads * c.ResolvedHeadDim;
        long kvPerTokenLayer = 2L * Dtypes.Bytes(r.ResolvedKv, kvWidth);
        long kvPerToken = c.NumHiddenLayers * kvPerTokenLayer;
        // A sliding-window layer's cache holds its window at most (Models/KvCache, transformers' HybridCache).
        long[] layerSlots = [.. Enumerable.Range(0, c.NumHiddenLayers).Select(l => Math.Min(r.Context, (long)(c.WindowOf(l) ?? r.Context)))];
        long kv = SaturatingBytes.Product(layerSlots.Sum(), kvPerTokenLayer, r.MaxBatch);
        long repeatedWidth = c.NumAttentionHeads == c.KeyValueHeads ? 0 : 2L * c.NumAttentionHeads * c.ResolvedHeadDim;
        long weights = r.WeightDtype == DType.Nf4
            ? model.Modules.Sum(m => m.Kind == ModuleKind.Linear && m.Layer is not null
                ? Dtypes.Nf4Bytes(m.WeightElements) + Dtypes.Bytes(r.ResolvedCompute, m.BiasElements)
                : Dtypes.Bytes(r.ResolvedCompute, m.Parameters))
            : Dtypes.Bytes(r.WeightDtype, model.TotalParameters);
        var targets = r.Targets ?? TargetMatcher.DefaultFor(c.ModelType);
        long adapterElements = model.Modules.Where(m => m.Kind == ModuleKind.Linear && !m.Tied && targets.Matches(m))
            .Sum(m => (long)r.MaxRank * (m.In + m.Out));
        if (adapterElements == 0 && r.Adapters > 0) throw new PlanException("target_modules", $"no module of {model.Name} matches");
        long adapterEach = Dtypes.Bytes(r.ResolvedAdapter, adapterElements);
        long chunk = r.ResolvedPrefillTokens;
        double e = Dtypes.BytesPerElement(r.ResolvedCompute);
        long LayerWorkingSet(long tokens) => (long)Math.Ceiling(tokens * (4.0 * c.HiddenSize + 2.0 * kvWidth + 3.0 * c.IntermediateSize) * e)
            + Dtypes.Bytes(r.ResolvedKv, tokens * repeatedWidth);
        long prefill = LayerWorkingSet(chunk) + 4L * r.MaxBatch * c.VocabSize;
        long scored = Math.Min(ScoringChunkTokens(c.VocabSize, r.MaxPrefillTokens), r.Context);
        long scoring = LayerWorkingSet(scored) + (long)Math.Ceiling(scored * (double)c.VocabSize * (e + (r.ResolvedCompute == DType.Fp32 ? 0 : 4) + 4));
        return new ServePlan
        {
            Model = model.Name,
            Request = r,
            WeightsBytes = weights,
            KvBytesPerToken = kvPerToken,
            KvBytesPerTokenPerLayer = kvPerTokenLayer,
            KvCacheBytes = kv,
            KvLayerSlots = layerSlots.Sum(),
            WidestLayerSlots = layerSlots.Max(),
            KvGrowthBytes = r.ConcatenatedCache ? SaturatingBytes.Product(r.MaxBatch, layerSlots.Max(), kvPerTokenLayer) : 0,
            AdaptersBytes = adapterEach * r.Adapters,
            AdapterBytesEach = adapterEach,
            PrefillBytes = prefill,
            ScoringBytes = scoring,
            ScoringTokens = scored,
            FrameworkOverheadBytes = r.ResolvedOverheadBytes,
        };
    }
}
