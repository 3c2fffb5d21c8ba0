using PeftSharp.Kernels;
using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// A dense frozen Linear with one plain LoRA adapter while training, <c>y = x Wᵀ + b + ((x Aᵀ) s) Bᵀ</c>, as one autograd
/// node instead of libtorch's chain (the base linear, the adapter's matmul, the scaling's mul, B's transpose, addmm and
/// their views: about ten nodes per module) and without two of its activation-sized tensors per module: the forward adds
/// the LoRA product into the base output in place (addmm_, where the chain's addmm copied the base output into a fresh
/// tensor), the backward adds dd A into g W in place (where autograd summed two fresh [N, in] gradients).
/// Forward: the base linear, d = (x Aᵀ) s, y += d Bᵀ: the ops, order and bits of the chain. Backward: dB = gᵀ d,
/// dd = s (g B), dA = ddᵀ x, dx = g W + dd A (only where x needs a gradient: not layer 0's, which the frozen embeddings
/// give none). Saved: x and W (the base linear saved them before), d [N, r], A, B: the step keeps what the chain kept,
/// minus nothing it counts. No dropout (its dropped x would be a second input: that case keeps the chain), CPU only
/// (the custom backward runs on the step's thread, as <see cref="ReturnedGradients"/> needs).
/// </summary>
internal sealed class LoraFunction : autograd.SingleTensorFunction<LoraFunction>
{
    public override string Name => "LoraLinear";

    static readonly KernelUse Use = new();

    /// <summary>Forwards / backwards run through this node on this thread (tests assert the training path took it).</summary>
    internal static (long Forward, long Backward) Calls => Use.Calls;

    /// <summary>
    /// Whether this function can take the layer's forward: recording gradients for a trainable A and B, a dense base
    /// weight, CPU, one dtype throughout.
    /// </summary>
    internal static bool Applies(Tensor x, TunableLinear layer, Tensor a, Tensor b) =>
        is_grad_enabled() && a.requires_grad && b.requires_grad && layer.weight is { } w && !w.requires_grad
        && x.device_type == DeviceType.CPU && x.dtype == a.dtype && w.dtype == a.dtype && b.dtype == a.dtype
        && (layer.bias is null || layer.bias.dtype == a.dtype);

    /// <summary>x Wᵀ + bias + ((x Aᵀ) s) Bᵀ for <paramref name="x"/> [.., in].</summary>
    public static Tensor Compute(Tensor x, Tensor weight, Tensor? bias, Tensor a, Tensor b, double scaling) =>
        apply(x, weight, bias!, a, b, scaling);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, w, bias, a, b, s) = ((Tensor)vars[0], (Tensor)vars[1], vars[2] as Tensor, (Tensor)vars[3], (Tensor)vars[4], (double)vars[5]);
        long outF = b.shape[0], r = a.shape[0];
        Tensor y;
        using (ForwardProfiler.Measure("base linear (frozen matmul)"))
            y = nn.functional.linear(x, w, bias);
        var down = nn.functional.linear(x, a) * s;
        // In place into the base output, which nothing else holds (the chain's addmm wrote a copy of it).
        using (var y2 = y.view(-1, outF))
            y2.addmm_(down.view(-1, r), b.t(), 1, 1);
        // No dispose scope here: TorchSharp turns these into saved variables after forward returns (the caller's scope
        // frees the wrappers afterwards; the saved variables keep the tensors).
        ctx.save_for_backward([x, w, down, a, b]);
        ctx.save_data("scaling", s);
        ctx.save_data("xGrad", x.requires_grad);
        ctx.set_materialize_grads(false);
        Use.Forward();
        return y;
    }

    // The incoming gradient is disposed once used, the returned ones at this thread's next custom backward
    // (ReturnedGradients): otherwise they would live until the step ends.
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        ReturnedGradients.Release();
        if (grad is null || grad.IsInvalid) return [null!, null!, null!, null!, null!, null!];
        try
        {
            using var scope = NewDisposeScope();
            var saved = ctx.get_saved_variables();
            var (x, w, down, a, b) = (saved[0], saved[1], saved[2], saved[3], saved[4]);
            double s = (double)ctx.get_data("scaling");
            long inF = a.shape[1], outF = b.shape[0], r = a.shape[0];
            var g = grad.reshape(-1, outF);
            var d = down.view(-1, r);
            var dB = g.t().mm(d);                         // [out, r]
            var dd = g.mm(b).mul_(s);                     // [N, r]: the gradient of x Aᵀ
            var dA = dd.t().mm(x.reshape(-1, inF));       // [r, in]
            Tensor? dx = null;
            if ((bool)ctx.get_data("xGrad"))
            {
                dx = g.mm(w);                             // [N, in], the base linear's input gradient
                dx.addmm_(dd, a, 1, 1);
                dx = dx.view(x.shape);
            }
            Use.Backward();
            return [dx is null ? null! : ReturnedGradients.Keep(dx), null!, null!, ReturnedGradients.Keep(dA), ReturnedGradients.Keep(dB), null!];
        }
        finally { grad.Dispose(); }
    }
}
