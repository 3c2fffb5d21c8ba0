using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// y = x W^T for a quantised W without keeping W: forward dequantises, multiplies and frees it; backward
/// dequantises again for grad_x = g W. The base never gets a gradient (it is not an input of the graph).
/// </summary>
internal sealed class QuantizedLinearFunction : autograd.SingleTensorFunction<QuantizedLinearFunction>
{
    public override string Name => "QuantizedLinear";

    public static Tensor Apply(Tensor x, IQuantizedWeight w, ScalarType dtype)
    {
        // Nothing to differentiate: skip the autograd node (and the output-shaped buffer it caches).
        if (!is_grad_enabled() || !x.requires_grad) return Compute(x, w, dtype);
        return apply(x, w, dtype);
    }

    static Tensor Compute(Tensor x, IQuantizedWeight w, ScalarType dtype)
    {
        using var dense = w.Dequantize(dtype, x.device);
        return nn.functional.linear(x, dense);
    }

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
        using var dense = w.Dequantize(dtype, grad.device);
        return [grad.matmul(dense), null!, null!];
    }
}
