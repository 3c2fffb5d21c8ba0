using System.Diagnostics;
using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// y = x W^T for a quantised W without keeping W: forward dequantises, multiplies and frees it; backward
/// dequantises again for grad_x = g W. The base never gets a gradient (it is not an input of the graph).
/// On CPU the dense weight is written into one scratch buffer per thread and dtype, sized for the largest weight seen
/// and reused by every layer, forward and backward: one layer's weight at a time, as before, but without a
/// fresh allocation (and its page faults: a weight over glibc's mmap threshold is a new mapping each time) per call.
/// Where <see cref="DequantReuse"/> has a budget, a grad-recording forward dequantises into a kept buffer instead and
/// its backward multiplies by that buffer (the same bits) rather than dequantising again.
/// </summary>
internal sealed class QuantizedLinearFunction : autograd.SingleTensorFunction<QuantizedLinearFunction>
{
    public override string Name => "QuantizedLinear";

    [ThreadStatic] static Dictionary<ScalarType, Tensor>? _scratch;

    public static Tensor Apply(Tensor x, IQuantizedWeight w, ScalarType dtype)
    {
        // Nothing to differentiate: skip the autograd node (and the output-shaped buffer it caches).
        if (!is_grad_enabled() || !x.requires_grad) return Compute(x, w, dtype, DequantStats.Pass.Forward);
        return apply(x, w, dtype);
    }

    /// <summary>Frees this thread's scratch buffers (they are rebuilt on the next quantised matmul).</summary>
    public static void ReleaseScratch()
    {
        if (_scratch is null) return;
        foreach (var t in _scratch.Values) t.Dispose();
        _scratch = null;
    }

    static bool KernelPath(IQuantizedWeight w, ScalarType dtype, Device device) =>
        device.type == DeviceType.CPU && w.Device.type == DeviceType.CPU && Nf4Kernel.Supports(dtype);

    /// <summary>
    /// Runs <paramref name="use"/> on the dense weight: a view of this thread's scratch where the weight can write
    /// into it (CPU), else a fresh dequantised tensor freed afterwards. <paramref name="use"/> must not keep it.
    /// </summary>
    static Tensor WithDense(IQuantizedWeight w, ScalarType dtype, Device device, DequantStats.Pass pass, Func<Tensor, Tensor> use)
    {
        if (KernelPath(w, dtype, device))
        {
            long n = w.Shape.Aggregate(1L, (a, b) => a * b);
            _scratch ??= new();
            if (!_scratch.TryGetValue(dtype, out var buf) || buf.numel() < n)
            {
                buf?.Dispose();
                buf = empty(n, dtype).DetachFromDisposeScope();
                _scratch[dtype] = buf;
            }
            using var flat = buf.narrow(0, 0, n);
            using var view = flat.view(w.Shape);
            if (DequantInto(w, view, pass)) return use(view);
        }
        long start = Stopwatch.GetTimestamp();
        using var dense = w.Dequantize(dtype, device);
        DequantStats.Add(pass, dense.numel(), Stopwatch.GetTimestamp() - start);
        return use(dense);
    }

    static bool DequantInto(IQuantizedWeight w, Tensor view, DequantStats.Pass pass)
    {
        long start = Stopwatch.GetTimestamp();
        if (!w.DequantizeInto(view)) return false;
        DequantStats.Add(pass, view.numel(), Stopwatch.GetTimestamp() - start);
        return true;
    }

    static Tensor Compute(Tensor x, IQuantizedWeight w, ScalarType dtype, DequantStats.Pass pass) =>
        WithDense(w, dtype, x.device, pass, dense => nn.functional.linear(x, dense));

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var w = (IQuantizedWeight)vars[1];
        var dtype = (ScalarType)vars[2];
        ctx.save_data("w", w);
        ctx.save_data("dtype", dtype);
        // TorchSharp would build zeros for a missing grad from an output-shaped tensor that our dispose scope frees.
        ctx.set_materialize_grads(false);
        // Saved even when null: the backward looks the key up either way.
        var kept = KernelPath(w, dtype, x.device) ? DequantReuse.Reserve(w.Shape, dtype) : null;
        ctx.save_data("kept", kept!);
        if (kept is not null)
        {
            using var view = kept.Dense!.view(w.Shape);
            if (DequantInto(w, view, DequantStats.Pass.Forward)) return nn.functional.linear(x, view);
            if (DequantReuse.Take(kept) is { } unused) DequantReuse.Return(unused, kept.Bytes);   // a weight without an in-place path
        }
        return Compute(x, w, dtype, DequantStats.Pass.Forward);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        if (grad is null || grad.IsInvalid) return [null!, null!, null!];
        var w = (IQuantizedWeight)ctx.get_data("w");
        var dtype = (ScalarType)ctx.get_data("dtype");
        if (ctx.get_data("kept") is DequantReuse.Entry kept && DequantReuse.Take(kept) is { } flat)
        {
            try
            {
                using var view = flat.view(w.Shape);
                DequantStats.AddReused(view.numel());
                return [grad.matmul(view), null!, null!];
            }
            finally { DequantReuse.Return(flat, kept.Bytes); }
        }
        return [WithDense(w, dtype, grad.device, DequantStats.Pass.Backward, dense => grad.matmul(dense)), null!, null!];
    }
}
