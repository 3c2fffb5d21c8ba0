using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>Pre-norm decoder block: x + attn(norm(x)), then x + mlp(norm(x)).</summary>
public sealed class DecoderLayer : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public Attention self_attn;
    public Mlp mlp;
    public RmsNorm input_layernorm, post_attention_layernorm;
#pragma warning restore IDE1006

    public int Index { get; }
    /// <summary>Optional hooks after the attention and MLP sub-layers (Houlsby adapters).</summary>
    public ISublayerHook? AfterAttention { get; set; }
    public ISublayerHook? AfterMlp { get; set; }

    public DecoderLayer(int index, ModelConfig c, AdapterState state, ScalarType dtype, Func<string, bool> quantized) : base(index.ToString())
    {
        Index = index;
        string prefix = $"model.layers.{index}";
        self_attn = new Attention($"{prefix}.self_attn", c, state, dtype, quantized);
        mlp = new Mlp($"{prefix}.mlp", c, state, dtype, quantized);
        input_layernorm = new RmsNorm("input_layernorm", c.HiddenSize, c.RmsNormEps, dtype);
        post_attention_layernorm = new RmsNorm("post_attention_layernorm", c.HiddenSize, c.RmsNormEps, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => throw new NotSupportedException("use Forward(x, ctx)");

    public Tensor Forward(Tensor x, ForwardContext ctx)
    {
        using var scope = NewDisposeScope();
        var a = self_attn.Forward(input_layernorm.forward(x), ctx, Index);
        if (AfterAttention is { } ha) a = ha.Apply(a);
        x = x + a;
        var m = mlp.forward(post_attention_layernorm.forward(x));
        if (AfterMlp is { } hm) m = hm.Apply(m);
        return (x + m).MoveToOuterDisposeScope();
    }
}
