using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>The decoder stack: HF's LlamaModel / Qwen2Model / Qwen3Model / Phi3Model / Gemma2Model ("model.*" parameter names).</summary>
internal sealed class DecoderStack : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public TokenEmbedding embed_tokens;
    public ModuleList<DecoderLayer> layers;
    public RmsNorm norm;
#pragma warning restore IDE1006

    public DecoderStack(ModelConfig c, AdapterState state, ScalarType dtype, Func<string, bool> quantized) : base("model")
    {
        embed_tokens = new TokenEmbedding("embed_tokens", c.VocabSize, c.HiddenSize, dtype);
        layers = new ModuleList<DecoderLayer>(Enumerable.Range(0, c.NumLayers).Select(i => new DecoderLayer(i, c, state, dtype, quantized)).ToArray());
        norm = new RmsNorm("norm", c.HiddenSize, c.RmsNormEps, dtype, plusOne: c.GemmaBlock);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => throw new NotSupportedException("use CausalLM.Forward");
}

/// <summary>
/// A Llama-family causal language model (Llama 2/3/3.x, Mistral, Qwen2, Qwen3, Phi-3, Gemma 2) with Hugging Face parameter names,
/// so state dicts map 1:1 onto checkpoints. Every projection is a <see cref="TunableLinear"/>, which is
/// where adapters and quantised bases plug in. Apps get one as <see cref="PeftModel.BaseModel"/> (a TorchSharp module:
/// <c>parameters()</c>, <c>to(device)</c>, <c>state_dict()</c>); running it goes through <see cref="PeftModel.Forward"/>.
/// </summary>
public sealed class CausalLM : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    internal DecoderStack model;
    internal TunableLinear? lm_head;
#pragma warning restore IDE1006

    /// <summary>The parsed config.json the model was built from.</summary>
    public ModelConfig Config { get; }
    /// <summary>The dtype of the dense weights (float32, bfloat16, float16) the model was loaded in.</summary>
    public ScalarType Dtype { get; }
    internal AdapterState State { get; } = new();
    internal Rope Rope { get; }
    /// <summary>The plain layer runner: one forward call per decoder layer.</summary>
    internal static readonly Func<DecoderLayer, Tensor, ForwardContext, Tensor> DefaultLayerRunner = (l, x, ctx) => l.Forward(x, ctx);
    /// <summary>How one decoder layer is run; gradient checkpointing swaps this for a recomputing runner.</summary>
    internal Func<DecoderLayer, Tensor, ForwardContext, Tensor> LayerRunner { get; set; } = DefaultLayerRunner;
    /// <summary>Set by the loader: the scheme of quantised layers ("none" for dense).</summary>
    internal string QuantizationScheme { get; set; } = "none";
    /// <summary>Optional hook on the input embeddings at the start of a sequence (prompt tuning's soft prompt).</summary>
    internal IInputEmbeddingsHook? InputEmbeddingsHook { get; set; }
    /// <summary>
    /// Set on the model of a `train --compute-dtype bf16|fp16` run (MethodFactory): the head then computes each
    /// position's logit for the next input token, the training target, in fp32 (<see cref="NextTokenLogits"/>), and
    /// returns fp32 logits. Generation (the last position only) and models loaded for inference are unaffected.
    /// </summary>
    internal bool MixedPrecisionTraining { get; set; }

    internal CausalLM(ModelConfig config, ScalarType dtype = ScalarType.Float32, Func<string, bool>? quantized = null) : base("CausalLM")
    {
        Kernels.MklCodePath.Ensure();   // before this process's first matmul: MKL fixes its code path then
        Config = config;
        Dtype = dtype;
        Rope = new Rope(config);
        quantized ??= _ => false;
        model = new DecoderStack(config, State, dtype, quantized);
        if (!config.TieWordEmbeddings)
            lm_head = new TunableLinear("lm_head", config.HiddenSize, config.VocabSize, false, State, dtype);
        RegisterComponents();
        // Inference mode until a trainer calls train(), as HF's from_pretrained leaves a model: adapter dropout is off.
        eval();
    }

    internal IReadOnlyList<DecoderLayer> Layers => model.layers.ToList();

    /// <summary>Every projection with its full HF module name, in model order (lm_head last, when untied).</summary>
    internal IEnumerable<TunableLinear> Linears()
    {
        foreach (var l in model.layers)
        {
            foreach (var p in l.self_attn.Projections()) yield return p;
            foreach (var p in l.mlp.Projections()) yield return p;
        }
        if (lm_head is not null) yield return lm_head;
    }

    /// <summary>The device the weights live on.</summary>
    public Device Device => model.embed_tokens.weight.device;

    /// <summary>Logits [batch, seq, vocab] for input ids [batch, seq] (no cache, no padding mask), with the active adapters.</summary>
    public override Tensor forward(Tensor inputIds) => Forward(inputIds);

    /// <summary>
    /// Logits [B, T, V] for input ids [B, T]. With a cache, the ids continue the cached sequence.
    /// <paramref name="attentionMask"/> [B, past+T] (1 = real token, 0 = padding) enables left-padded batches;
    /// <paramref name="inputsEmbeds"/> [B, T, H] replaces the embedding lookup (prompt tuning).
    /// <paramref name="lastOnly"/> computes the head for the last position only (generation).
    /// </summary>
    internal Tensor Forward(Tensor? inputIds, KvCache? cache = null, Tensor? attentionMask = null, Tensor? inputsEmbeds = null, bool lastOnly = false)
    {
        using var profile = ForwardProfiler.Measure("positions, masks, rotary tables");
        using var scope = NewDisposeScope();
        var h = inputsEmbeds ?? model.embed_tokens.forward(inputIds!);
        int prepended = 0;
        if (InputEmbeddingsHook is { } hook && (cache is null || cache.Length == 0)) (h, attentionMask, prepended) = hook.Apply(h, attentionMask);
        // Gemma scales the embeddings by sqrt(hidden), rounded to the model dtype as HF's normalizer is.
        if (Config.GemmaBlock) h = h * tensor(Math.Sqrt(Config.HiddenSize), h.dtype, h.device);
        long b = h.shape[0], t = h.shape[1], past = cache?.Length ?? 0;
        Tensor? positions = null;   // null: 0..t-1 in every row (the rotary tables come from Rope's cache)
        Tensor? mask = null, keyValid = null;
        bool trailingPadding = false;
        if (attentionMask is not null)
        {
            if (attentionMask.shape[0] != b || attentionMask.shape[1] != past + t)
                throw new ArgumentException($"attention mask [{string.Join(", ", attentionMask.shape)}] must be [{b}, {past + t}]");
            var am = attentionMask.to_type(ScalarType.Int64).to(h.device);
            positions = ScalarArgs.With(0L, zero => am.cumsum(1).Minus(1L).clamp_min(zero)).narrow(1, past, t);
            mask = AttentionMask.Build(am, t, past, h.dtype);
            keyValid = am;
            // Every row's 1s before its 0s (no 0 followed by a 1): right padding only.
            trailingPadding = past == 0 && t > 1 && !(am.narrow(1, 1, t - 1) > am.narrow(1, 0, t - 1)).any().item<bool>();
        }
        else
        {
            if (past > 0) positions = ScalarArgs.Arange(past, past + t, ScalarType.Int64, h.device).unsqueeze(0).expand(b, t);
            if (past > 0 && t > 1) mask = AttentionMask.Build(ones(b, past + t, ScalarType.Int64, h.device), t, past, h.dtype);
        }
        // A window only changes anything once some query has more than window slots at or before it.
        Tensor? slidingMask = Config.SlidingWindow is { } w && Config.SlidingLayers.Any(s => s) && past + t > w
            ? AttentionMask.Build(keyValid ?? ones(b, past + t, ScalarType.Int64, h.device), t, past, h.dtype, w)
            : null;
        var (cos, sin) = positions is null ? Rope.CosSinFromStart(b, t, h.dtype, h.device) : Rope.CosSin(positions, h.dtype);
        var ctx = new ForwardContext { Cos = cos, Sin = sin, Mask = mask, SlidingMask = slidingMask, Cache = cache, MaskIsTrailingPadding = trailingPadding };
        foreach (var layer in model.layers) h = LayerRunner(layer, h, ctx);
        if (lastOnly) h = h.narrow(1, t - 1, 1);
        else if (prepended > 0) h = h.narrow(1, prepended, t - prepended);
        h = model.norm.forward(h);
        var logits = MixedPrecisionTraining && inputIds is not null && !lastOnly && prepended == 0 && h.dtype is ScalarType.BFloat16 or ScalarType.Float16
                     && PlainHeadWeight() is { } head && head.dtype == h.dtype
            ? NextTokenLogits.Forward(h, head, inputIds)
            : lm_head is not null ? lm_head.forward(h) : nn.functional.linear(h, model.embed_tokens.weight);
        if (Config.FinalLogitSoftcapping is { } cap) logits = logits.DividedBy(cap).tanh().Times(cap);
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>The head's weight when the head is a plain matmul (tied embeddings, or an lm_head without bias,
    /// quantisation or an active adapter); null otherwise.</summary>
    Tensor? PlainHeadWeight() => lm_head is null ? model.embed_tokens.weight
        : lm_head.Quantized is null && lm_head.bias is null && (lm_head.Adapters.Count == 0 || State.Disabled) ? lm_head.weight : null;

    /// <summary>
    /// True when a cached step of <paramref name="t"/> tokens after <paramref name="past"/> crosses longrope's switch
    /// from the short to the long factors (the sequence passes original_max_position_embeddings). transformers'
    /// Phi3ForCausalLM.prepare_inputs_for_generation then drops the cache and recomputes the whole sequence, so
    /// every key is rotated with the long factors; generation does the same.
    /// </summary>
    internal bool CacheGoesStale(long past, long t) =>
        past > 0 && Config.RopeScaling is { Type: "longrope" } lr && past <= lr.OriginalMaxPositionEmbeddings && past + t > lr.OriginalMaxPositionEmbeddings;

    /// <summary>Total parameters, counting a quantised weight by its dense element count.</summary>
    public long ParameterCount() =>
        parameters().Sum(p => p.numel()) + Linears().Where(l => l.Quantized is not null).Sum(l => l.InFeatures * l.OutFeatures);

    /// <summary>Frees and removes every layer's sublayer hooks (Houlsby bottlenecks).</summary>
    internal void DisposeLayerHooks()
    {
        foreach (var layer in Layers)
        {
            (layer.AfterAttention as IDisposable)?.Dispose();
            (layer.AfterMlp as IDisposable)?.Dispose();
            layer.AfterAttention = layer.AfterMlp = null;
        }
    }

    /// <summary>Also frees the dense weights this model kept for its backward (its dequantisation reuse pool), the
    /// rotary tables its Rope cached, and the hooks attached to it (Houlsby bottlenecks, a soft prompt): they are not
    /// submodules, so the base class would leave their parameters to the finalizer.</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            PeftSharp.Quantization.DequantReuse.Detach(this);
            Rope.Dispose();
            DisposeLayerHooks();
            (InputEmbeddingsHook as IDisposable)?.Dispose();
            InputEmbeddingsHook = null;
        }
        base.Dispose(disposing);
    }
}
