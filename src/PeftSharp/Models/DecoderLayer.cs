using TorchSharp;
using static TorchSharp.torch;
using ModuleNames = PeftSharp.Memory.ModuleNames;

namespace PeftSharp.Models;

/// <summary>
/// Pre-norm decoder block: x + attn(norm(x)), then x + mlp(norm(x)). Gemma 2 also norms each sub-layer's output
/// (post_attention_layernorm after attention, post_feedforward_layernorm after the MLP, pre_feedforward_layernorm
/// before it), so there "post_attention_layernorm" means something else than in Llama, under the same name.
/// </summary>
internal sealed class DecoderLayer : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public Attention self_attn;
    public Mlp mlp;
    public RmsNorm input_layernorm, post_attention_layernorm;
    /// <summary>Gemma 2 only.</summary>
    public RmsNorm? pre_feedforward_layernorm, post_feedforward_layernorm;
#pragma warning restore IDE1006

    public int Index { get; }
    /// <summary>Optional hooks after the attention and MLP sub-layers (Houlsby adapters).</summary>
    public ISublayerHook? AfterAttention { get; set; }
    public ISublayerHook? AfterMlp { get; set; }

    public DecoderLayer(int index, ModelConfig c, AdapterState state, ScalarType dtype, Func<string, bool> quantized) : base(index.ToString())
    {
        Index = index;
        string prefix = $"model.layers.{index}";
        self_attn = new Attention($"{prefix}.{ModuleNames.SelfAttn}", index, c, state, dtype, quantized);
        mlp = new Mlp($"{prefix}.{ModuleNames.Mlp}", c, state, dtype, quantized);
        RmsNorm Norm(string name) => new(name, c.HiddenSize, c.RmsNormEps, dtype, plusOne: c.GemmaBlock);
        input_layernorm = Norm("input_layernorm");
        post_attention_layernorm = Norm("post_attention_layernorm");
        if (c.GemmaBlock)
        {
            pre_feedforward_layernorm = Norm("pre_feedforward_layernorm");
            post_feedforward_layernorm = Norm("post_feedforward_layernorm");
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => throw new NotSupportedException("use Forward(x, ctx)");

    public Tensor Forward(Tensor x, ForwardContext ctx)
    {
        using var profile = ForwardProfiler.Measure("residual adds (+ sublayer hooks)");
        using var scope = NewDisposeScope();
        var a = self_attn.Forward(input_layernorm.forward(x), ctx, Index);
        if (pre_feedforward_layernorm is not null) a = post_attention_layernorm.forward(a);
        if (AfterAttention is { } ha) a = ha.Apply(a);
        x = x.Plus(a);
        var m = pre_feedforward_layernorm is not null
            ? post_feedforward_layernorm!.forward(mlp.forward(pre_feedforward_layernorm.forward(x)))
            : mlp.forward(post_attention_layernorm.forward(x));
        if (AfterMlp is { } hm) m = hm.Apply(m);
        return x.Plus(m).MoveToOuterDisposeScope();
    }
}
