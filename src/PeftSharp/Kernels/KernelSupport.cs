using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace PeftSharp.Kernels;

/// <summary>Small pieces the autograd wrappers of the kernels share.</summary>
internal static class KernelSupport
{
    /// <summary>A contiguous CPU tensor's data as T* (through its byte span: tensors under 2 GiB).</summary>
    public static unsafe T* Ptr<T>(Tensor t) where T : unmanaged =>
        (T*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));

    /// <summary>libtorch's data pointer of t (its storage offset included): any size and strides, unlike <see cref="Ptr{T}"/>.</summary>
    public static nint Address(Tensor t)
    {
        var p = THSTensor_data(t.Handle);
        if (p == IntPtr.Zero) TorchSharp.torch.CheckForErrors();
        return p;
    }

    [DllImport("LibTorchSharp")]
    static extern IntPtr THSTensor_data(IntPtr handle);

    /// <summary>t itself when contiguous, else a contiguous copy (in the caller's dispose scope).</summary>
    public static Tensor Contiguous(Tensor t) => t.is_contiguous() ? t : t.contiguous();

}

/// <summary>
/// One kernel function's per-thread switch and counters: the "off" switch tests and benches use for their A/B reference
/// (the libtorch path), the forward/backward calls tests assert (the fast path ran) and the seconds benches print.
/// Per thread, as the model's forward and a CPU backward run on the calling thread.
/// </summary>
internal sealed class KernelUse
{
    sealed class State
    {
        public bool Off;
        public long ForwardCalls, BackwardCalls, ForwardTicks, BackwardTicks;
    }

    readonly ThreadLocal<State> _state = new(() => new State());

    /// <summary>Whether <see cref="Disable"/> holds on this thread.</summary>
    public bool IsOff => _state.Value!.Off;

    /// <summary>Until disposed, the kernel is off on this thread.</summary>
    public IDisposable Disable()
    {
        var s = _state.Value!;
        bool was = s.Off;
        s.Off = true;
        return new Restore(s, was);
    }

    sealed class Restore(State s, bool was) : IDisposable { public void Dispose() => s.Off = was; }

    /// <summary>Forward / backward calls on this thread.</summary>
    public (long Forward, long Backward) Calls => (_state.Value!.ForwardCalls, _state.Value!.BackwardCalls);

    /// <summary>Seconds this thread spent in the kernel's forward / backward (calls counted with a start timestamp).</summary>
    public (double Forward, double Backward) Seconds =>
        ((double)_state.Value!.ForwardTicks / System.Diagnostics.Stopwatch.Frequency, (double)_state.Value!.BackwardTicks / System.Diagnostics.Stopwatch.Frequency);

    /// <summary>Counts a forward call; with <paramref name="start"/> (a Stopwatch timestamp) its time too.</summary>
    public void Forward(long start = 0)
    {
        var s = _state.Value!;
        s.ForwardCalls++;
        if (start != 0) s.ForwardTicks += System.Diagnostics.Stopwatch.GetTimestamp() - start;
    }

    /// <summary>Counts a backward call; with <paramref name="start"/> (a Stopwatch timestamp) its time too.</summary>
    public void Backward(long start = 0)
    {
        var s = _state.Value!;
        s.BackwardCalls++;
        if (start != 0) s.BackwardTicks += System.Diagnostics.Stopwatch.GetTimestamp() - start;
    }
}
