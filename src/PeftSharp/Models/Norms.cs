using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// RMSNorm as in HF Llama: normalise in fp32, scale by weight in the input dtype. Gemma's variant
/// (<c>plusOne</c>) scales by (1 + weight) in fp32 and only then casts back, as Gemma2RMSNorm does. fp32 on the CPU
/// goes through <see cref="Kernels.RmsNormFunction"/> (both variants), everything else through the op chain.
/// </summary>
internal sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public Parameter weight;
#pragma warning restore IDE1006
    readonly double _eps;
    readonly bool _plusOne;

    public RmsNorm(string name, long dim, double eps, ScalarType dtype, bool plusOne = false) : base(name)
    {
        weight = new Parameter(plusOne ? zeros(dim, dtype) : ones(dim, dtype), requires_grad: false);
        _eps = eps;
        _plusOne = plusOne;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var profile = ForwardProfiler.Measure("rmsnorm");
        // fp32 on the CPU: one C# pass each way (Kernels/RmsNormFunction) instead of the chain below and its nodes.
        if (Kernels.RmsNormFunction.Applies(x, weight)) return Kernels.RmsNormFunction.Compute(x, weight, _eps, _plusOne);
        using var scope = NewDisposeScope();
        var xf = x.dtype == ScalarType.Float32 || x.dtype == ScalarType.Float64 ? x : x.to_type(ScalarType.Float32);
        var normed = xf * xf.square().mean([-1L], keepdim: true).Plus(_eps).rsqrt();
        if (_plusOne) return (normed * weight.to_type(normed.dtype).Plus(1L)).to_type(x.dtype).MoveToOuterDisposeScope();
        var cast = normed.to_type(x.dtype);
        // Scaled in place when the dtypes agree (the product with rstd is fresh and nothing saved it, so autograd
        // allows it): one [.., H] buffer less per norm. Otherwise weight * normed, whose dtype promotion decides.
        if (weight.dtype == cast.dtype && !weight.requires_grad) return cast.mul_(weight).MoveToOuterDisposeScope();
        return (weight * cast).MoveToOuterDisposeScope();
    }
}

/// <summary>Token embedding with the HF parameter name "weight".</summary>
internal sealed class TokenEmbedding : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public Parameter weight;
#pragma warning restore IDE1006

    public TokenEmbedding(string name, long vocab, long dim, ScalarType dtype) : base(name)
    {
        weight = new Parameter(empty(vocab, dim, dtype), requires_grad: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor ids)
    {
        using var profile = ForwardProfiler.Measure("embedding");
        using var scope = NewDisposeScope();
        var flat = weight.index_select(0, ids.flatten());
        var shape = ids.shape.Append(weight.shape[1]).ToArray();
        return flat.view(shape).MoveToOuterDisposeScope();
    }
}
