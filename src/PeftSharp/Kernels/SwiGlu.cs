using TorchSharp;
using static TorchSharp.torch;
using static PeftSharp.Kernels.KernelSupport;

namespace PeftSharp.Kernels;

/// <summary>
/// The gated MLP's act(gate) * up through <see cref="SwiGluKernel"/> as a TorchSharp autograd function: one pass forward,
/// one backward, saving gate and up (the inputs, alive anyway) instead of act(gate) and the autograd chain's
/// intermediates. Two forms: separate gate / up tensors, or Phi-3's fused gate_up [.., 2 I] (gate first), whose
/// gradient is written as one [.., 2 I] tensor (no zero-filled halves to add up).
/// </summary>
internal sealed class SwiGlu : autograd.SingleTensorFunction<SwiGlu>
{
    public override string Name => "SwiGlu";

    static readonly KernelUse Use = new();

    /// <summary>Kernel forwards / backwards run on this thread (tests assert the fast path ran).</summary>
    internal static (long Forward, long Backward) Calls => Use.Calls;

    /// <summary>Until disposed, <see cref="Applies"/> is false on this thread: libtorch's ops (the A/B reference of tests and the bench).</summary>
    internal static IDisposable Off() => Use.Disable();

    /// <summary>Whether the kernel can take this input (gate, or the fused gate_up): CPU fp32 or bf16 (`--compute-dtype
    /// bf16`; fp16 keeps libtorch's ops) with AVX-512F or AVX2 + FMA, under 2 GiB (a Span's reach).</summary>
    internal static bool Applies(Tensor input) =>
        !Use.IsOff && input.device_type == DeviceType.CPU && input.dtype is ScalarType.Float32 or ScalarType.BFloat16 && SwiGluKernel.Supported
        && input.numel() * input.ElementSize < int.MaxValue;

    static SwiGluKernel.Activation Act(bool geluTanh) => geluTanh ? SwiGluKernel.Activation.GeluTanh : SwiGluKernel.Activation.Silu;

    /// <summary>act(gate) * up (gate and up of one shape); an autograd node only where one needs a gradient.</summary>
    public static Tensor Compute(Tensor gate, Tensor up, bool geluTanh) => Run(gate, up, geluTanh);

    /// <summary>act(gateUp[.., :I]) * gateUp[.., I:] for Phi-3's fused projection output [.., 2 I].</summary>
    public static Tensor ComputeFused(Tensor gateUp, bool geluTanh) => Run(gateUp, null, geluTanh);

    static Tensor Run(Tensor first, Tensor? up, bool geluTanh)
    {
        if (is_grad_enabled() && (first.requires_grad || up is { requires_grad: true })) return apply(first, up!, geluTanh);
        using var scope = NewDisposeScope();
        return Forward(Contiguous(first), up is null ? null : Contiguous(up), Act(geluTanh)).MoveToOuterDisposeScope();
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (first, up, geluTanh) = (Contiguous((Tensor)vars[0]), vars[1] is Tensor t ? Contiguous(t) : null, (bool)vars[2]);
        var h = Forward(first, up, Act(geluTanh));
        // No dispose scope here: TorchSharp saves the tensors after forward returns and skips wrappers disposed by then
        // (the Mlp's scope frees the wrappers; the saved variables keep the tensors).
        ctx.save_for_backward(up is null ? [first] : [first, up]);
        ctx.save_data("gelu", geluTanh);
        ctx.set_materialize_grads(false);
        return h;
    }

    // The incoming gradient is disposed once used, the returned ones at the next custom backward (ReturnedGradients), so
    // each layer's gradients do not live to the step's end.
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        ReturnedGradients.Release();
        if (grad is null || grad.IsInvalid) return [null!, null!, null!];
        try
        {
            using var scope = NewDisposeScope();
            var saved = ctx.get_saved_variables();
            var act = Act((bool)ctx.get_data("gelu"));
            var dOut = Contiguous(grad);
            if (saved.Count == 1)
            {
                var dgu = Backward(saved[0], null, dOut, act).Item1;
                return [ReturnedGradients.Keep(dgu), null!, null!];
            }
            var (dg, du) = Backward(saved[0], saved[1], dOut, act);
            return [ReturnedGradients.Keep(dg), ReturnedGradients.Keep(du!), null!];
        }
        finally { grad.Dispose(); }
    }

    /// <summary>Rows, I and the inputs' row stride: separate [.., I] tensors, or the fused [.., 2 I] one.</summary>
    static (long Rows, int Cols, long Stride) Layout(Tensor first, bool fused)
    {
        long last = first.shape[^1];
        int cols = (int)(fused ? last / 2 : last);
        return (first.numel() / Math.Max(1, last), cols, last);
    }

    /// <summary>h in the inputs' dtype (fp32 or bf16; gate, up and the incoming gradient share it).</summary>
    static Tensor Forward(Tensor first, Tensor? up, SwiGluKernel.Activation act)
    {
        SameDtype(first, up);
        var (rows, cols, stride) = Layout(first, up is null);
        var shape = first.shape.ToArray();
        shape[^1] = cols;
        var h = empty(shape, first.dtype);
        if (first.dtype == ScalarType.BFloat16) Forward<Bf16>(first, up, h, act, rows, cols, stride);
        else Forward<F32>(first, up, h, act, rows, cols, stride);
        Use.Forward();
        return h;
    }

    static unsafe void Forward<T>(Tensor first, Tensor? up, Tensor h, SwiGluKernel.Activation act, long rows, int cols, long stride) where T : unmanaged, IElement<T>
    {
        T* g = Ptr<T>(first), u = up is null ? g + cols : Ptr<T>(up);
        SwiGluKernel.Forward(act, g, u, stride, Ptr<T>(h), rows, cols, get_num_threads());
    }

    static (Tensor, Tensor?) Backward(Tensor first, Tensor? up, Tensor dOut, SwiGluKernel.Activation act)
    {
        SameDtype(first, up);
        SameDtype(first, dOut);
        var (rows, cols, stride) = Layout(first, up is null);
        var dFirst = empty_like(first);
        var dUp = up is null ? null : empty_like(up);
        if (first.dtype == ScalarType.BFloat16) Backward<Bf16>(first, up, dOut, dFirst, dUp, act, rows, cols, stride);
        else Backward<F32>(first, up, dOut, dFirst, dUp, act, rows, cols, stride);
        Use.Backward();
        return (dFirst, dUp);
    }

    static unsafe void Backward<T>(Tensor first, Tensor? up, Tensor dOut, Tensor dFirst, Tensor? dUp, SwiGluKernel.Activation act,
        long rows, int cols, long stride) where T : unmanaged, IElement<T>
    {
        T* g = Ptr<T>(first), u = up is null ? g + cols : Ptr<T>(up);
        T* dg = Ptr<T>(dFirst), du = dUp is null ? dg + cols : Ptr<T>(dUp);
        SwiGluKernel.Backward(act, g, u, stride, Ptr<T>(dOut), dg, du, rows, cols, get_num_threads());
    }

    static void SameDtype(Tensor a, Tensor? b)
    {
        if (b is not null && b.dtype != a.dtype) throw new ArgumentException($"SwiGlu: {a.dtype} and {b.dtype} operands (one dtype expected)");
    }
}
