using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace PeftSharp.Kernels;

/// <summary>Small pieces the autograd wrappers of the kernels share.</summary>
internal static class KernelSupport
{
    /// <summary>A contiguous CPU tensor's data as T* (through its byte span: tensors under 2 GiB).</summary>
    public static unsafe T* Ptr<T>(Tensor t) where T : unmanaged =>
        (T*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));

    /// <summary>t itself when contiguous, else a contiguous copy (in the caller's dispose scope).</summary>
    public static Tensor Contiguous(Tensor t) => t.is_contiguous() ? t : t.contiguous();

    /// <summary>Sets a per-thread "kernel off" flag until disposed (the A/B switch of tests and benches), then restores it.</summary>
    public sealed class Off : IDisposable
    {
        readonly Action<bool> _set;
        readonly bool _was;

        public Off(Func<bool> get, Action<bool> set)
        {
            (_set, _was) = (set, get());
            set(true);
        }

        public void Dispose() => _set(_was);
    }
}
