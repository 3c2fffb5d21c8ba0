using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>The decoder stack: HF's LlamaModel / Qwen2Model ("model.*" parameter names).</summary>
public sealed class DecoderStack : nn.Module<Tensor, Tensor>
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
        norm = new RmsNorm("norm", c.HiddenSize, c.RmsNormEps, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => throw new NotSupportedException("use CausalLM.Forward");
}

/// <summary>
/// A Llama-family causal language model (Llama 2/3/3.x, Mistral, Qwen2) with Hugging Face parameter names,
/// so state dicts map 1:1 onto checkpoints. Every projection is a <see cref="TunableLinear"/>, which is
/// where adapters and quantised bases plug in.
/// </summary>
public sealed class CausalLM : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public DecoderStack model;
    public TunableLinear? lm_head;
#pragma warning restore IDE1006

    public ModelConfig Config { get; }
    public ScalarType Dtype { get; }
    public AdapterState State { get; } = new();
    public Rope Rope { get; }
    /// <summary>The plain layer runner: one forward call per decoder layer.</summary>
    public static readonly Func<DecoderLayer, Tensor, ForwardContext, Tensor> DefaultLayerRunner = (l, x, ctx) => l.Forward(x, ctx);
    /// <summary>How one decoder layer is run; gradient checkpointing swaps this for a recomputing runner.</summary>
    public Func<DecoderLayer, Tensor, ForwardContext, Tensor> LayerRunner { get; set; } = DefaultLayerRunner;
    /// <summary>Set by the loader: the scheme of quantised layers ("none" for dense).</summary>
    public string QuantizationScheme { get; set; } = "none";

    public CausalLM(ModelConfig config, ScalarType dtype = ScalarType.Float32, Func<string, bool>? quantized = null) : base("CausalLM")
    {
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

    public IReadOnlyList<DecoderLayer> Layers => model.layers.ToList();

    /// <summary>Every projection with its full HF module name, in model order (lm_head last, when untied).</summary>
    public IEnumerable<TunableLinear> Linears()
    {
        foreach (var l in model.layers)
        {
            yield return l.self_attn.q_proj; yield return l.self_attn.k_proj; yield return l.self_attn.v_proj; yield return l.self_attn.o_proj;
            yield return l.mlp.gate_proj; yield return l.mlp.up_proj; yield return l.mlp.down_proj;
        }
        if (lm_head is not null) yield return lm_head;
    }

    public Device Device => model.embed_tokens.weight.device;

    public override Tensor forward(Tensor inputIds) => Forward(inputIds);

    /// <summary>
    /// Logits [B, T, V] for input ids [B, T]. With a cache, the ids continue the cached sequence.
    /// <paramref name="attentionMask"/> [B, past+T] (1 = real token, 0 = padding) enables left-padded batches;
    /// <paramref name="inputsEmbeds"/> [B, T, H] replaces the embedding lookup (prompt tuning).
    /// <paramref name="lastOnly"/> computes the head for the last position only (generation).
    /// </summary>
    public Tensor Forward(Tensor? inputIds, KvCache? cache = null, Tensor? attentionMask = null, Tensor? inputsEmbeds = null, bool lastOnly = false)
    {
        using var scope = NewDisposeScope();
        var h = inputsEmbeds ?? model.embed_tokens.forward(inputIds!);
        long b = h.shape[0], t = h.shape[1], past = cache?.Length ?? 0;
        Tensor positions;
        Tensor? mask = null;
        if (attentionMask is not null)
        {
            if (attentionMask.shape[0] != b || attentionMask.shape[1] != past + t)
                throw new ArgumentException($"attention mask [{string.Join(", ", attentionMask.shape)}] must be [{b}, {past + t}]");
            var am = attentionMask.to_type(ScalarType.Int64).to(h.device);
            positions = (am.cumsum(1) - 1).clamp_min(0).narrow(1, past, t);
            mask = BuildMask(am, t, past, h.dtype);
        }
        else
        {
            positions = arange(past, past + t, ScalarType.Int64, h.device).unsqueeze(0).expand(b, t);
            if (past > 0 && t > 1) mask = BuildMask(ones(b, past + t, ScalarType.Int64, h.device), t, past, h.dtype);
        }
        var (cos, sin) = Rope.CosSin(positions, h.dtype);
        var ctx = new ForwardContext { Cos = cos, Sin = sin, Mask = mask, Cache = cache };
        foreach (var layer in model.layers) h = LayerRunner(layer, h, ctx);
        if (lastOnly) h = h.narrow(1, t - 1, 1);
        h = model.norm.forward(h);
        var logits = lm_head is not null ? lm_head.forward(h) : nn.functional.linear(h, model.embed_tokens.weight);
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>Additive mask [B, 1, T, S]: causal over absolute slots, padding keys hidden, the diagonal always open.</summary>
    static Tensor BuildMask(Tensor keyValid, long t, long past, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        long s = past + t;
        var qPos = arange(past, s, ScalarType.Int64, keyValid.device).view(t, 1);
        var kPos = arange(0, s, ScalarType.Int64, keyValid.device).view(1, s);
        var causal = kPos.le(qPos).unsqueeze(0);                       // [1, T, S]
        var allowed = causal.logical_and(keyValid.to_type(ScalarType.Bool).unsqueeze(1));  // [B, T, S]
        allowed = allowed.logical_or(kPos.eq(qPos).unsqueeze(0));      // a padded query still sees itself: no NaN rows
        var m = zeros(allowed.shape, dtype, keyValid.device).masked_fill(allowed.logical_not(), float.NegativeInfinity);
        return m.unsqueeze(1).MoveToOuterDisposeScope();
    }

    /// <summary>Total parameters, counting a quantised weight by its dense element count.</summary>
    public long ParameterCount() =>
        parameters().Sum(p => p.numel()) + Linears().Where(l => l.Quantized is not null).Sum(l => l.InFeatures * l.OutFeatures);
}
