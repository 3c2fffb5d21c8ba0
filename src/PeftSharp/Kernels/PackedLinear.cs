using TorchSharp;
using static TorchSharp.torch;
using static PeftSharp.Kernels.KernelSupport;

namespace PeftSharp.Kernels;

/// <summary>
/// A frozen fp32 Linear through its weight packed for MKL (<see cref="PackedGemm"/>): forward x W^T (+ bias) with the
/// forward-packed weight, backward g W with the backward-packed one. The weight gets no gradient (it is frozen: a
/// trainable weight is never packed) and the node saves nothing but the packed pair, which the layer owns.
/// </summary>
internal sealed class PackedLinear : autograd.SingleTensorFunction<PackedLinear>
{
    public override string Name => "PackedLinear";

    static readonly KernelUse Use = new();

    /// <summary>Forward / backward calls on this thread (tests assert the packed path ran).</summary>
    internal static (long Forward, long Backward) Calls => Use.Calls;

    /// <summary>Until disposed, the packed path is off on this thread: libtorch's linear (the bench's A/B reference).</summary>
    internal static IDisposable Off() => Use.Disable();

    /// <summary>One weight packed both ways. The pair belongs to its layer, which disposes it when the weight may change.</summary>
    internal sealed class Pair(Tensor weight, int rows) : IDisposable
    {
        /// <summary>The row count it was packed for: MKL lays a pack made for many rows out for splitting rows over the
        /// threads, and multiplies fewer rows through it on one thread (0.5-0.7x the plain GEMM, 512- and 768-wide weights
        /// at 2 threads); with at least this many rows it is as fast as a pack made for them or faster (`PeftSharp.Bench
        /// packed-gemm`, bench/README.md). Fewer rows go through the plain weight.</summary>
        public int Rows { get; } = rows;
        public PackedGemm.PackedWeight Forward { get; } = new(weight, forward: true, rows);
        public PackedGemm.PackedWeight Backward { get; } = new(weight, forward: false, rows);
        /// <summary>The weight's data address when packed: a weight replaced since (moved, reloaded) no longer matches.</summary>
        public nint Source { get; } = Address(weight);
        public void Dispose() { Forward.Dispose(); Backward.Dispose(); }
    }

    /// <summary>Whether <paramref name="x"/> goes through <paramref name="pair"/>: CPU fp32, at least the rows it was packed
    /// for (generation's few rows keep the plain weight), and the path not off on this thread.</summary>
    internal static bool Applies(Tensor x, Pair pair) => !Use.IsOff && x.device_type == DeviceType.CPU && x.dtype == ScalarType.Float32
        && x.numel() / Math.Max(1, x.shape[^1]) >= pair.Rows;

    /// <summary>x W^T + bias through the packed pair; an autograd node only where x needs a gradient.</summary>
    public static Tensor Compute(Tensor x, Pair pair, Tensor? bias)
    {
        if (is_grad_enabled() && x.requires_grad) return apply(x, pair, bias!);
        using var scope = NewDisposeScope();
        return Forward(Contiguous(x), pair, bias).MoveToOuterDisposeScope();
    }

    static Tensor Forward(Tensor x, Pair pair, Tensor? bias)
    {
        var y = pair.Forward.Times(x);
        if (bias is not null) y.PlusInPlace(bias);
        Use.Forward();
        return y;
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var pair = (Pair)vars[1];
        ctx.save_data("pair", pair);
        ctx.set_materialize_grads(false);
        return Forward(Contiguous((Tensor)vars[0]), pair, vars[2] as Tensor);
    }

    // The incoming gradient is disposed once used, the returned one at the next custom backward (ReturnedGradients).
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        ReturnedGradients.Release();
        if (grad is null || grad.IsInvalid) return [null!, null!, null!];
        try
        {
            using var scope = NewDisposeScope();
            var dx = ((Pair)ctx.get_data("pair")).Backward.Times(Contiguous(grad));
            Use.Backward();
            return [ReturnedGradients.Keep(dx), null!, null!];
        }
        finally { grad.Dispose(); }
    }
}
