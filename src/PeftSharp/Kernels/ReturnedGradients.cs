using static TorchSharp.torch;

namespace PeftSharp.Kernels;

/// <summary>
/// The gradients our custom autograd functions return (the kernels here, QLoRA's quantised linear). TorchSharp runs a
/// CPU custom backward on the thread that called backward(), inside the training step's dispose scope: the wrappers of
/// the incoming gradient and of the returned ones would join that scope and keep the tensors alive until the step ends
/// (activation-sized tensors per layer, where native autograd frees each as soon as the next node has used it). So a
/// backward disposes its incoming gradient once used and hands its results to <see cref="Keep"/>; they are disposed at
/// the next custom backward on this thread (<see cref="Release"/>, called first by every one; the trainers call it after
/// each backward too, so the loss's [N, V] gradient does not live through the optimizer step and the next forward): by
/// then libtorch's engine has taken its own references to an earlier node's outputs.
/// </summary>
internal static class ReturnedGradients
{
    [ThreadStatic] static List<Tensor>? _held;

    /// <summary>Gradients held on this thread now.</summary>
    internal static int Held => _held?.Count ?? 0;

    /// <summary>Disposes the wrappers earlier backwards on this thread returned.</summary>
    public static void Release()
    {
        if (_held is null) return;
        foreach (var t in _held) t.Dispose();
        _held.Clear();
    }

    /// <summary><paramref name="t"/>, out of any dispose scope and held until this thread's next <see cref="Release"/>.</summary>
    public static Tensor Keep(Tensor t)
    {
        (_held ??= []).Add(t.DetachFromDisposeScope());
        return t;
    }
}
