using TorchSharp;
using static TorchSharp.torch;
using static PeftSharp.Kernels.KernelSupport;

namespace PeftSharp.Kernels;

/// <summary>
/// Summed cross entropy with ignore index -100 through <see cref="CrossEntropyKernel"/> as a TorchSharp autograd
/// function: logits [N, V] fp32, targets [N] int64, a 0-dim fp32 loss. Saved: the logits (alive anyway: lm_head's
/// output), the targets and the row logsumexp [N], instead of libtorch's [N, V] log_softmax; the backward writes the
/// logits' gradient in one pass instead of nll's zero-filled scatter and log_softmax's backward.
/// </summary>
internal sealed class CrossEntropy : autograd.SingleTensorFunction<CrossEntropy>
{
    public override string Name => "CrossEntropy";

    static readonly KernelUse Use = new();

    /// <summary>Kernel forwards / backwards run on this thread (tests assert the fast path ran).</summary>
    internal static (long Forward, long Backward) Calls => Use.Calls;

    /// <summary>Until disposed, <see cref="Applies"/> is false on this thread: libtorch's cross_entropy (tests' and the bench's reference).</summary>
    internal static IDisposable Off() => Use.Disable();

    /// <summary>CPU fp32 logits under 2 GiB (a Span's reach) with AVX-512F or AVX2 + FMA.</summary>
    internal static bool Applies(Tensor logits) =>
        !Use.IsOff && logits.device_type == DeviceType.CPU && logits.dtype == ScalarType.Float32 && CrossEntropyKernel.Supported
        && logits.numel() < int.MaxValue / sizeof(float);

    /// <summary>sum over rows whose target is not -100 of logsumexp(logits[r]) - logits[r, target[r]], as a 0-dim fp32 tensor.</summary>
    public static Tensor Sum(Tensor logits, Tensor targets)
    {
        if (targets.dtype != ScalarType.Int64) targets = targets.to_type(ScalarType.Int64);   // in the caller's scope
        if (is_grad_enabled() && logits.requires_grad) return apply(logits, targets);
        using var scope = NewDisposeScope();
        return Forward(Contiguous(logits), Contiguous(targets)).Loss.MoveToOuterDisposeScope();
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (logits, targets) = (Contiguous((Tensor)vars[0]), Contiguous((Tensor)vars[1]));
        var (loss, lse) = Forward(logits, targets);
        // No dispose scope here (TorchSharp saves the tensors after forward returns; see CausalAttention.forward).
        ctx.save_for_backward([logits, targets, lse]);
        ctx.set_materialize_grads(false);
        return loss;
    }

    // The incoming gradient is disposed once used, the returned one at the next custom backward (ReturnedGradients), so
    // the [N, V] gradient does not live to the step's end.
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        ReturnedGradients.Release();
        if (grad is null || grad.IsInvalid) return [null!, null!];
        try
        {
            var saved = ctx.get_saved_variables();
            return [ReturnedGradients.Keep(Backward(saved[0], saved[1], saved[2], grad.item<float>())), null!];
        }
        finally { grad.Dispose(); }
    }

    static unsafe (Tensor Loss, Tensor Lse) Forward(Tensor logits, Tensor targets)
    {
        long rows = logits.shape[0];
        var lse = empty(rows, ScalarType.Float32);
        double sum = CrossEntropyKernel.Forward(Ptr<float>(logits), rows, (int)logits.shape[1], Ptr<long>(targets), Ptr<float>(lse), get_num_threads());
        Use.Forward();
        return (tensor((float)sum), lse);
    }

    static unsafe Tensor Backward(Tensor logits, Tensor targets, Tensor lse, float g)
    {
        var d = empty_like(logits);
        CrossEntropyKernel.Backward(Ptr<float>(logits), logits.shape[0], (int)logits.shape[1], Ptr<long>(targets), Ptr<float>(lse), g, Ptr<float>(d), get_num_threads());
        Use.Backward();
        return d;
    }
}
