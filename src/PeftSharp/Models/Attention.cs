using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>Grouped-query self-attention with rotary positions (HF names: self_attn.{q,k,v,o}_proj).</summary>
public sealed class Attention : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public TunableLinear q_proj, k_proj, v_proj, o_proj;
#pragma warning restore IDE1006
    readonly int _heads, _kvHeads, _headDim;

    public Attention(string prefix, ModelConfig c, AdapterState state, ScalarType dtype, Func<string, bool> quantized) : base("self_attn")
    {
        _heads = c.NumHeads; _kvHeads = c.NumKvHeads; _headDim = c.HeadDim;
        long h = c.HiddenSize, qDim = (long)c.NumHeads * c.HeadDim, kvDim = (long)c.NumKvHeads * c.HeadDim;
        TunableLinear L(string n, long i, long o, bool b) => new($"{prefix}.{n}", i, o, b, state, dtype, quantized($"{prefix}.{n}"));
        q_proj = L("q_proj", h, qDim, c.QkvBias);
        k_proj = L("k_proj", h, kvDim, c.QkvBias);
        v_proj = L("v_proj", h, kvDim, c.QkvBias);
        o_proj = L("o_proj", qDim, h, c.OBias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => throw new NotSupportedException("use Forward(x, ctx, layer)");

    public Tensor Forward(Tensor x, ForwardContext ctx, int layer)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        var q = q_proj.forward(x).view(b, t, _heads, _headDim).transpose(1, 2);
        var k = k_proj.forward(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);
        var v = v_proj.forward(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);
        q = Rope.Apply(q, ctx.Cos, ctx.Sin);
        k = Rope.Apply(k, ctx.Cos, ctx.Sin);
        if (ctx.Cache is { } cache) (k, v) = cache.Append(layer, k, v);
        if (_heads != _kvHeads)
        {
            k = k.repeat_interleave(_heads / _kvHeads, 1);
            v = v.repeat_interleave(_heads / _kvHeads, 1);
        }
        var a = ctx.Mask is null
            ? nn.functional.scaled_dot_product_attention(q, k, v, null, 0.0, t > 1)
            : nn.functional.scaled_dot_product_attention(q, k, v, ctx.Mask, 0.0, false);
        var merged = a.transpose(1, 2).reshape(b, t, (long)_heads * _headDim);
        return o_proj.forward(merged).MoveToOuterDisposeScope();
    }
}

/// <summary>SwiGLU MLP: down(silu(gate(x)) * up(x)).</summary>
public sealed class Mlp : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public TunableLinear gate_proj, up_proj, down_proj;
#pragma warning restore IDE1006

    public Mlp(string prefix, ModelConfig c, AdapterState state, ScalarType dtype, Func<string, bool> quantized) : base("mlp")
    {
        TunableLinear L(string n, long i, long o) => new($"{prefix}.{n}", i, o, false, state, dtype, quantized($"{prefix}.{n}"));
        gate_proj = L("gate_proj", c.HiddenSize, c.IntermediateSize);
        up_proj = L("up_proj", c.HiddenSize, c.IntermediateSize);
        down_proj = L("down_proj", c.IntermediateSize, c.HiddenSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = nn.functional.silu(gate_proj.forward(x)) * up_proj.forward(x);
        return down_proj.forward(h).MoveToOuterDisposeScope();
    }
}
