using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// RMSNorm with a frozen weight as one autograd node: y = cast(x r) * w with r = rsqrt(mean(x^2) + eps) in fp32 (the
/// forward is <see cref="RmsNorm"/>'s, op for op). The backward uses the closed form
/// gx = r g' - x (r^3 / H) sum(g' x), g' = fp32(g w), from the saved input and the [.., 1] row scales: five passes
/// over [.., H] where the plain graph (pow, mean, add, rsqrt, two products, the cast) takes about ten, and the
/// normalised product is not kept.
/// </summary>
internal sealed class RmsNormFunction : autograd.SingleTensorFunction<RmsNormFunction>
{
    public override string Name => "RmsNorm";

    /// <summary>Row scales rsqrt(mean(x^2) + eps) [.., 1] of fp32 <paramref name="xf"/>.</summary>
    internal static Tensor RowScale(Tensor xf, double eps) => (xf.pow(2).mean([-1L], keepdim: true) + eps).rsqrt();

    internal static Tensor Fp32(Tensor x) => x.dtype == ScalarType.Float32 || x.dtype == ScalarType.Float64 ? x : x.to_type(ScalarType.Float32);

    /// <summary>x in any float dtype; <paramref name="weight"/> of x's dtype, frozen.</summary>
    public static Tensor Apply(Tensor x, Tensor weight, double eps)
    {
        if (is_grad_enabled() && x.requires_grad) return apply(x, weight, eps);
        using var scope = NewDisposeScope();
        var xf = Fp32(x);
        return (xf * RowScale(xf, eps)).to_type(x.dtype).mul_(weight).MoveToOuterDisposeScope();
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, weight, eps) = ((Tensor)vars[0], (Tensor)vars[1], (double)vars[2]);
        using var scope = NewDisposeScope();
        var xf = Fp32(x);
        // TorchSharp makes the saved variables after forward returns: r must outlive this scope (the caller's frees it).
        var r = RowScale(xf, eps).MoveToOuterDisposeScope();
        ctx.save_for_backward([x, r, weight]);
        ctx.set_materialize_grads(false);
        return (xf * r).to_type(x.dtype).mul_(weight).MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        if (grad is null || grad.IsInvalid) return [null!, null!, null!];
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        var (x, r, weight) = (saved[0], saved[1], saved[2]);
        // g * w in the input dtype, as the plain graph's mul backward computes it, then fp32.
        var gw = grad * weight;
        var g = Fp32(gw);
        var xf = Fp32(x);
        var coef = (g * xf).sum([-1L], keepdim: true).mul_(r.pow(3)).div_(x.shape[^1]);
        var gx = g.mul_(r).addcmul_(xf, coef, -1);
        return [gx.to_type(x.dtype).MoveToOuterDisposeScope(), null!, null!];
    }
}
