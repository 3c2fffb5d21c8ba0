using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// RoPE as one autograd node. Its backward is the rotation by -theta (the transpose of the forward's rotation:
/// gx1 = g1 cos1 + g2 sin2, gx2 = g2 cos2 - g1 sin1), computed from the saved cos/sin tables alone, so the input
/// is not kept alive for the backward, and the slices, products and cat of the plain graph (each narrow's backward is a
/// zero-filled full-size tensor, summed) are replaced by three passes per half. The output and the input gradient keep
/// the input's memory layout ([B, T, H, D] behind the [B, H, T, D] view attention passes), so no transposing copy is
/// made either way: the transpose and reshape before RoPE stay views in the backward too.
/// </summary>
internal sealed class RopeFunction : autograd.SingleTensorFunction<RopeFunction>
{
    public override string Name => "Rope";

    /// <summary>x [B, H, T, D] (any strides), cos/sin [B or 1, 1, T, rotaryDim] with no gradient.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin) =>
        is_grad_enabled() && x.requires_grad ? apply(x, cos, sin) : Rotate(x, cos, sin, 1, null);

    /// <summary>
    /// Rotates the first cos.shape[-1] dims of each head by <paramref name="sign"/> * theta into <paramref name="into"/>
    /// (when null, a fresh tensor in x's memory layout: every operand of the elementwise ops then walks memory in the
    /// same order, and attention reads q/k with strides anyway); the remaining dims are copied. x1 c1 - s x2 s1 and
    /// x2 c2 + s x1 s2 (s the sign): each half is its product with cos plus the other half's term added in place
    /// (addcmul_ rounds the multiply-add once).
    /// </summary>
    internal static Tensor Rotate(Tensor x, Tensor cos, Tensor sin, int sign, Tensor? into)
    {
        using var scope = NewDisposeScope();
        long rd = cos.shape[^1], full = x.shape[^1], half = rd / 2;
        var outT = into ?? empty_like(x);
        Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
        outT.narrow(-1, 0, half).copy_(x1).mul_(cos.narrow(-1, 0, half)).addcmul_(x2, sin.narrow(-1, 0, half), -sign);
        outT.narrow(-1, half, half).copy_(x2).mul_(cos.narrow(-1, half, half)).addcmul_(x1, sin.narrow(-1, half, half), sign);
        if (rd < full) outT.narrow(-1, rd, full - rd).copy_(x.narrow(-1, rd, full - rd));
        // A given buffer belongs to the caller's scope already; moving it again would lift it past that scope.
        return into is null ? outT.MoveToOuterDisposeScope() : outT;
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, cos, sin) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2]);
        ctx.save_for_backward([cos, sin]);
        // The layout of x's storage (its strides), so the gradient matches it.
        ctx.save_data("shape", x.shape);
        ctx.save_data("stride", x.stride());
        ctx.set_materialize_grads(false);
        return Rotate(x, cos, sin, 1, null);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        if (grad is null || grad.IsInvalid) return [null!, null!, null!];
        using var scope = NewDisposeScope();   // frees the wrappers of the unpacked cos/sin
        var saved = ctx.get_saved_variables();
        var shape = (long[])ctx.get_data("shape");
        var stride = (long[])ctx.get_data("stride");
        // The input's strides when they describe a dense tensor (a transposed contiguous one), else contiguous.
        var into = IsDensePermutation(shape, stride) ? empty_strided(shape, stride, grad.dtype, grad.device) : null;
        return [Rotate(grad, saved[0], saved[1], -1, into).MoveToOuterDisposeScope(), null!, null!];
    }

    /// <summary>True when the strides are those of a contiguous tensor with its dims permuted (no gaps, no overlap).</summary>
    static bool IsDensePermutation(long[] shape, long[] stride)
    {
        var order = Enumerable.Range(0, shape.Length).OrderBy(i => stride[i]).ToArray();
        long expected = 1;
        foreach (var i in order)
        {
            if (shape[i] != 1 && stride[i] != expected) return false;
            expected *= shape[i];
        }
        return true;
    }
}
