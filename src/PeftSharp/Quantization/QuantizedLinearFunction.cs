using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// y = x W^T for a quantised W without keeping W: forward dequantises, multiplies and frees it; backward
/// dequantises again for grad_x = g W. The base never gets a gradient (it is not an input of the graph).
/// On CPU the dense weight is written into one scratch buffer per thread and dtype, sized for the largest weight seen
/// and reused by every layer, forward and backward: one layer's dense weight at a time, as before, but without a
/// fresh allocation (and its page faults: a weight over glibc's mmap threshold is a new mapping each time) per call.
/// </summary>
internal sealed class QuantizedLinearFunction : autograd.SingleTensorFunction<QuantizedLinearFunction>
{
    public override string Name => "QuantizedLinear";

    [ThreadStatic] static Dictionary<ScalarType, Tensor>? _scratch;

    public static Tensor Apply(Tensor x, IQuantizedWeight w, ScalarType dtype)
    {
        // Nothing to differentiate: skip the autograd node (and the output-shaped buffer it caches).
        if (!is_grad_enabled() || !x.requires_grad) return Compute(x, w, dtype);
        return apply(x, w, dtype);
    }

    /// <summary>Frees this thread's scratch buffers (they are rebuilt on the next quantised matmul).</summary>
    public static void ReleaseScratch()
    {
        if (_scratch is null) return;
        foreach (var t in _scratch.Values) t.Dispose();
        _scratch = null;
    }

    /// <summary>
    /// Runs <paramref name="use"/> on the dense weight: a view of this thread's scratch where the weight can write
    /// into it (CPU), else a fresh dequantised tensor freed afterwards. <paramref name="use"/> must not keep it.
    /// </summary>
    static Tensor WithDense(IQuantizedWeight w, ScalarType dtype, Device device, Func<Tensor, Tensor> use)
    {
        if (device.type == DeviceType.CPU && w.Device.type == DeviceType.CPU)
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
            if (w.DequantizeInto(view)) return use(view);
        }
        using var dense = w.Dequantize(dtype, device);
        return use(dense);
    }

    static Tensor Compute(Tensor x, IQuantizedWeight w, ScalarType dtype) =>
        WithDense(w, dtype, x.device, dense => nn.functional.linear(x, dense));

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var w = (IQuantizedWeight)vars[1];
        var dtype = (ScalarType)vars[2];
        ctx.save_data("w", w);
        ctx.save_data("dtype", dtype);
        // TorchSharp would build zeros for a missing grad from an output-shaped tensor that our dispose scope frees.
        ctx.set_materialize_grads(false);
        return Compute(x, w, dtype);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        if (grad is null || grad.IsInvalid) return [null!, null!, null!];
        var w = (IQuantizedWeight)ctx.get_data("w");
        var dtype = (ScalarType)ctx.get_data("dtype");
        return [WithDense(w, dtype, grad.device, dense => grad.matmul(dense)), null!, null!];
    }
}
