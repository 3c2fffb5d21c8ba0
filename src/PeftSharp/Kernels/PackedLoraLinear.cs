using TorchSharp;
using static TorchSharp.torch;
using static PeftSharp.Kernels.KernelSupport;

namespace PeftSharp.Kernels;

/// <summary>
/// A packed frozen fp32 Linear with one plain LoRA on it (no dropout, no DoRA) as one autograd node:
/// forward y = x W^T (+ bias) through the forward-packed weight, then y += (s x A^T) B^T in place; backward
/// dx = g W through the backward-packed weight, then dx += (s g B) A in place, dA = (s g B)^T x, dB = g^T (s x A^T).
/// The same products as <see cref="PackedLinear"/> followed by LoraLayer's linear / scale / addmm chain, but without
/// that chain's copy of the base output (addmm out of place), its separate [.., in] LoRA input gradient and the add the
/// autograd engine makes of it, and six autograd nodes (views, mm, mul, addmm, transpose): one node per adapted module.
/// What changes in bits: x's gradient is dx_base + dx_lora summed here, before the engine adds the other consumers'
/// (k_proj's, ...), where the engine summed all of them in its own order (fp addition is not associative).
/// </summary>
internal sealed class PackedLoraLinear : autograd.SingleTensorFunction<PackedLoraLinear>
{
    public override string Name => "PackedLoraLinear";

    static readonly KernelUse Use = new();

    /// <summary>Forward / backward calls on this thread (tests assert the fused path ran).</summary>
    internal static (long Forward, long Backward) Calls => Use.Calls;

    /// <summary>Until disposed, the fused path is off on this thread: PackedLinear then LoraLayer's ops (the bench's A/B reference).</summary>
    internal static IDisposable Off() => Use.Disable();

    /// <summary>Whether the fused node takes this product: the packed path applies to x, gradients are recorded and both
    /// LoRA matrices are trainable fp32 (training; inference and frozen adapters keep the two-part path).</summary>
    internal static bool Applies(Tensor x, PackedLinear.Pair pair, Tensor a, Tensor b) =>
        !Use.IsOff && is_grad_enabled() && PackedLinear.Applies(x, pair)
        && a.requires_grad && b.requires_grad && a.dtype == ScalarType.Float32 && b.dtype == ScalarType.Float32
        && a.device_type == DeviceType.CPU && b.device_type == DeviceType.CPU;

    /// <summary>x W^T + bias + s (x A^T) B^T, W through <paramref name="pair"/>; the caller checked <see cref="Applies"/>.</summary>
    public static Tensor Compute(Tensor x, PackedLinear.Pair pair, Tensor? bias, Tensor a, Tensor b, double scaling) =>
        apply(x, a, b, pair, bias!, scaling);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, a, b, pair, bias, s) = (Contiguous((Tensor)vars[0]), (Tensor)vars[1], (Tensor)vars[2], (PackedLinear.Pair)vars[3], vars[4] as Tensor, (double)vars[5]);
        long inF = x.shape[^1], rows = x.numel() / Math.Max(1, inF), outF = b.shape[0];
        using var noGrad = no_grad();   // a and b are parameters: nothing here may be recorded
        var y = pair.Forward.Times(x);
        if (bias is not null) y.add_(bias);
        var x2 = x.view(rows, inF);
        // The rank-r activations, scaled as LoraLayer scales them (on r columns, not out), then added into y by the
        // same addmm LoraLayer runs, only in place: y is this node's own fresh tensor.
        var down = mm(x2, a.t()).mul_(s);
        y.view(rows, outF).addmm_(down, b.t());
        // No dispose scope here: TorchSharp turns these into saved variables after forward returns (as CausalAttention).
        ctx.save_for_backward([x2, down, a, b]);
        ctx.save_data("pair", pair);
        ctx.save_data("s", s);
        ctx.save_data("dx", ((Tensor)vars[0]).requires_grad);
        ctx.set_materialize_grads(false);
        Use.Forward();
        return y;
    }

    // The incoming gradient is disposed once used, the returned ones at the next custom backward (ReturnedGradients).
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        ReturnedGradients.Release();
        if (grad is null || grad.IsInvalid) return [null!, null!, null!, null!, null!, null!];
        try
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var saved = ctx.get_saved_variables();
            Tensor x2 = saved[0], down = saved[1], a = saved[2], b = saved[3];
            double s = (double)ctx.get_data("s");
            var g = Contiguous(grad);
            var g2 = g.view(-1, b.shape[0]);
            // g B is the gradient of s x A^T (addmm's mat1 grad); times s, of x A^T (the scaling's mul).
            var gxa = mm(g2, b).mul_(s);
            Tensor? dx = null;
            if ((bool)ctx.get_data("dx"))
            {
                dx = ((PackedLinear.Pair)ctx.get_data("pair")).Backward.Times(g);
                dx.view(-1, x2.shape[1]).addmm_(gxa, a);
                ReturnedGradients.Keep(dx);
            }
            // Transposed views of the products autograd's mm/addmm backward form (x^T gxa, down^T g), as they returned them.
            var da = ReturnedGradients.Keep(mm(x2.t(), gxa).t());
            var db = ReturnedGradients.Keep(mm(down.t(), g2).t());
            Use.Backward();
            return [dx!, da, db, null!, null!, null!];
        }
        finally { grad.Dispose(); }
    }
}
