using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Kernels;

/// <summary>
/// RMSNorm through <see cref="RmsNormKernel"/> as a TorchSharp autograd function: one pass over x forward, one pass over
/// x and the gradient backward, instead of the op chain's five forward passes and their autograd nodes; fp32, or bf16
/// in and out with fp32 arithmetic (bf16 training: no fp32 copy of x is made or saved). Saved for backward: x, the
/// effective weight (w, or 1 + w for Gemma, as fp32) and the per-row rstd; dw only where the weight needs a gradient
/// (full fine-tuning; LoRA freezes it).
/// </summary>
internal sealed class RmsNormFunction : autograd.SingleTensorFunction<RmsNormFunction>
{
    public override string Name => "RmsNorm";

    static readonly KernelUse Use = new();

    /// <summary>Kernel forwards / backwards run on this thread (tests assert the fast path ran).</summary>
    internal static (long Forward, long Backward) Calls => Use.Calls;

    /// <summary>Seconds this thread spent inside the kernel's forward / backward (the bench's split of the wrapper's cost).</summary>
    internal static (double Forward, double Backward) KernelSeconds => Use.Seconds;

    /// <summary>Until disposed, <see cref="Applies"/> is false on this thread: the op chain (the A/B reference of tests and the bench).</summary>
    internal static IDisposable Off() => Use.Disable();

    /// <summary>Whether the kernel takes this norm: x and weight both fp32 or both bf16 on the CPU, vectors in hardware.</summary>
    internal static bool Applies(Tensor x, Tensor weight) =>
        !Use.IsOff && RmsNormKernel.Supported && x.device_type == DeviceType.CPU && weight.device_type == DeviceType.CPU
        && x.dtype == weight.dtype && x.dtype is ScalarType.Float32 or ScalarType.BFloat16;

    /// <summary>
    /// x * rsqrt(mean(x^2, -1) + eps) * (plusOne ? 1 + weight : weight), same shape and dtype as x, computed in fp32; in
    /// bf16 rounded where <see cref="Models.RmsNorm"/>'s op chain rounds (the normed value before the weight, except
    /// Gemma's, rounded once at the end). An autograd node only where x or the weight needs a gradient.
    /// </summary>
    public static Tensor Compute(Tensor x, Tensor weight, double eps, bool plusOne)
    {
        if (is_grad_enabled() && (x.requires_grad || weight.requires_grad)) return apply(x, weight, eps, plusOne);
        using var scope = NewDisposeScope();
        return Forward(x.contiguous(), EffectiveWeight(weight, plusOne), eps, plusOne, keepRstd: false).Y.MoveToOuterDisposeScope();
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, weight, eps, plusOne) = ((Tensor)vars[0], (Tensor)vars[1], (double)vars[2], (bool)vars[3]);
        x = x.contiguous();
        var w = EffectiveWeight(weight.detach(), plusOne);
        var (y, rstd) = Forward(x, w, eps, plusOne, keepRstd: true);
        // No dispose scope here: TorchSharp turns these into saved variables after forward returns and skips wrappers
        // disposed by then (as CausalAttention); the caller's scope frees the wrappers.
        ctx.save_for_backward([x, w, rstd!]);
        ctx.save_data("dx", ((Tensor)vars[0]).requires_grad);
        ctx.save_data("dw", weight.requires_grad);
        ctx.save_data("dwType", weight.dtype);
        ctx.set_materialize_grads(false);
        return y;
    }

    // The incoming gradient is disposed once used, the returned ones at the next custom backward (ReturnedGradients), so
    // nine norms' dx do not live until the step ends.
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        ReturnedGradients.Release();
        if (grad is null || grad.IsInvalid) return [null!, null!, null!, null!];
        try
        {
            using var scope = NewDisposeScope();
            var saved = ctx.get_saved_variables();
            Tensor x = saved[0], w = saved[1], rstd = saved[2], g = grad.contiguous();
            bool wantDx = (bool)ctx.get_data("dx"), wantDw = (bool)ctx.get_data("dw");
            var dx = empty_like(x);
            var dw = wantDw ? empty_like(w) : null;
            int width = (int)x.shape[^1], rows = (int)(x.numel() / Math.Max(1, width));
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            unsafe
            {
                float* dwp = dw is null ? null : Ptr<float>(dw);
                if (x.dtype == ScalarType.Float32)
                    RmsNormKernel.Backward(Ptr<F32>(x), Ptr<float>(w), Ptr<float>(rstd), Ptr<F32>(g), Ptr<F32>(dx), dwp, rows, width, get_num_threads());
                else
                    RmsNormKernel.Backward(Ptr<Bf16>(x), Ptr<float>(w), Ptr<float>(rstd), Ptr<Bf16>(g), Ptr<Bf16>(dx), dwp, rows, width, get_num_threads());
            }
            if (dw is not null && (ScalarType)ctx.get_data("dwType") != ScalarType.Float32) dw = dw.to_type((ScalarType)ctx.get_data("dwType"));
            Use.Backward(start);
            ReturnedGradients.Keep(dx);
            if (dw is not null) ReturnedGradients.Keep(dw);
            return [wantDx ? dx : null!, dw!, null!, null!];
        }
        finally { grad.Dispose(); }
    }

    /// <summary>The weight the kernel multiplies by, as a contiguous fp32 row: w, or 1 + w in fp32 (Gemma2RMSNorm's order).</summary>
    static Tensor EffectiveWeight(Tensor weight, bool plusOne)
    {
        var w = weight.to_type(ScalarType.Float32);
        return (plusOne ? w.Plus(1L) : w).contiguous();
    }

    static unsafe (Tensor Y, Tensor? Rstd) Forward(Tensor x, Tensor w, double eps, bool plusOne, bool keepRstd)
    {
        int width = (int)x.shape[^1], rows = (int)(x.numel() / Math.Max(1, width));
        var y = empty_like(x);
        var rstd = keepRstd ? empty(rows, ScalarType.Float32) : null;
        float* rp = rstd is null ? null : Ptr<float>(rstd);
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        if (x.dtype == ScalarType.Float32)
            RmsNormKernel.Forward(Ptr<F32>(x), Ptr<float>(w), Ptr<F32>(y), rp, rows, width, (float)eps, roundNormed: false, get_num_threads());
        else   // Llama's norm rounds x * rstd to bf16 before the weight; Gemma's multiplies in fp32 and rounds once
            RmsNormKernel.Forward(Ptr<Bf16>(x), Ptr<float>(w), Ptr<Bf16>(y), rp, rows, width, (float)eps, roundNormed: !plusOne, get_num_threads());
        Use.Forward(start);
        return (y, rstd);
    }

    /// <summary>A contiguous CPU tensor's first element (libtorch's memory: it does not move).</summary>
    static unsafe T* Ptr<T>(Tensor t) where T : unmanaged => t.numel() == 0 ? null : KernelSupport.Ptr<T>(t);
}
