using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Kernels;

/// <summary>
/// Causal self-attention through <see cref="CausalAttentionKernel"/> as a TorchSharp autograd function: q [B, H, T, D],
/// k/v [B, KVH, T, D] (any strides with D contiguous: the transposed views of the projections' output need no copy)
/// give the output as [B, T, H, D] contiguous (o_proj's input layout, a view away); with cos/sin it applies the rotary
/// embedding itself (forward and backward), so the model skips Rope.Apply and its autograd chain. Saved for backward:
/// q, k, v, the output, the row logsumexp [B, H, T] and cos/sin; nothing T x T.
/// </summary>
internal sealed class CausalAttention : autograd.SingleTensorFunction<CausalAttention>
{
    public override string Name => "CausalAttention";

    static readonly KernelUse Use = new();

    /// <summary>Kernel forwards / backwards run on this thread (tests assert the fast path ran, benches print them).</summary>
    internal static (long Forward, long Backward) Calls => Use.Calls;

    /// <summary>Seconds this thread spent inside the kernel's forward / backward (the attention bench's split of autograd overhead).</summary>
    internal static (double Forward, double Backward) KernelSeconds => Use.Seconds;

    /// <summary>Until disposed, <see cref="Applies"/> is false on this thread: the SDPA path (the A/B reference of tests and the attention bench).</summary>
    internal static IDisposable Off() => Use.Disable();

    /// <summary>
    /// Whether the kernel can take this attention: CPU fp32 or bf16 (bf16 compute: widened to fp32 as rows are packed,
    /// outputs and gradients rounded once) with AVX-512F or AVX2 + FMA and head_dim a multiple of 32.
    /// </summary>
    internal static bool Applies(Tensor q, long headDim) =>
        !Use.IsOff && q.device_type == DeviceType.CPU && Takes(q.dtype) && CausalAttentionKernel.Supports(headDim);

    /// <summary>The element types the kernel reads and writes.</summary>
    static bool Takes(ScalarType t) => t is ScalarType.Float32 or ScalarType.BFloat16;

    /// <summary>A tensor the kernel can read: d contiguous, fp32 or bf16 (anything else as fp32).</summary>
    static Tensor Readable(Tensor t) => DContiguous(Takes(t.dtype) ? t : t.to_type(ScalarType.Float32));

    /// <summary>
    /// softmax(rope(q) rope(k)^T * scale + causal mask) v as [B, T, H, D], rope being <see cref="Models.Rope.Apply"/>
    /// with <paramref name="cos"/>/<paramref name="sin"/> [B, 1, T, D] over the whole head (null: q and k come rotated);
    /// an autograd node only where an input needs a gradient.
    /// </summary>
    public static Tensor Compute(Tensor q, Tensor k, Tensor v, double scale, Tensor? cos = null, Tensor? sin = null)
    {
        if (is_grad_enabled() && (q.requires_grad || k.requires_grad || v.requires_grad)) return apply(q, k, v, scale, cos!, sin!);
        using var scope = NewDisposeScope();
        (cos, sin) = (cos is null ? null : Readable(cos), sin is null ? null : Readable(sin));
        var (o, _) = Forward(q, k, v, cos, sin, scale);
        return o.MoveToOuterDisposeScope();
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (q, k, v, scale, cos, sin) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (double)vars[3], vars[4] as Tensor, vars[5] as Tensor);
        (q, k, v) = (DContiguous(q), DContiguous(k), DContiguous(v));
        (cos, sin) = (cos is null ? null : Readable(cos), sin is null ? null : Readable(sin));
        var (o, lse) = Forward(q, k, v, cos, sin, scale);
        // TorchSharp turns these into saved variables after forward returns, skipping any wrapper disposed by then: so
        // no dispose scope here (the caller's, around the attention, frees the wrappers; the saved variables keep the
        // tensors). The output goes in as a detached alias (same storage), not as the node's own output.
        ctx.save_for_backward([q, k, v, o.detach(), lse, cos!, sin!]);
        ctx.save_data("scale", scale);
        ctx.save_data("rope", cos is not null);
        // TorchSharp would build zeros for a missing grad from an output-shaped tensor that our dispose scope frees.
        ctx.set_materialize_grads(false);
        return o;
    }

    // The incoming gradient is disposed once used, the returned ones at the next custom backward (ReturnedGradients):
    // otherwise each layer's dq/dk/dv would live until the step ends.
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        ReturnedGradients.Release();
        if (grad is null || grad.IsInvalid) return [null!, null!, null!, null!, null!, null!];
        try
        {
            using var scope = NewDisposeScope();
            var saved = ctx.get_saved_variables();
            bool rope = (bool)ctx.get_data("rope");
            Tensor? cos = rope ? saved[5] : null, sin = rope ? saved[6] : null;
            var (dq, dk, dv) = Backward(saved[0], saved[1], saved[2], saved[3], saved[4], cos, sin, Readable(grad), (double)ctx.get_data("scale"));
            return [ReturnedGradients.Keep(dq), ReturnedGradients.Keep(dk), ReturnedGradients.Keep(dv), null!, null!, null!];
        }
        finally { grad.Dispose(); }
    }

    static Tensor DContiguous(Tensor t) => t.stride(-1) == 1 ? t : t.contiguous();

    static CausalAttentionKernel.Shape ShapeOf(Tensor q, Tensor k, double scale) =>
        new((int)q.shape[0], (int)q.shape[1], (int)k.shape[1], (int)q.shape[2], (int)q.shape[3], (float)scale);

    static CausalAttentionKernel.Rotary RotaryOf(Tensor? cos, Tensor? sin) => cos is null ? CausalAttentionKernel.Rotary.None
        : new(new(Data(cos), cos.stride(0), 0, cos.stride(2), IsBf16(cos)), new(Data(sin!), sin!.stride(0), 0, sin.stride(2), IsBf16(sin)));

    static bool IsBf16(Tensor t) => t.dtype == ScalarType.BFloat16;

    static unsafe (Tensor O, Tensor Lse) Forward(Tensor q, Tensor k, Tensor v, Tensor? cos, Tensor? sin, double scale)
    {
        var s = ShapeOf(q, k, scale);
        var o = empty([s.Batch, s.T, s.Heads, s.D], q.dtype);
        var lse = empty([s.Batch, s.Heads, s.T], ScalarType.Float32);
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        CausalAttentionKernel.Forward(s, Of(q), Of(k), Of(v), RotaryOf(cos, sin), HeadMajor(o), (float*)Data(lse), torch.get_num_threads());
        Use.Forward(start);
        return (o, lse);
    }

    static unsafe (Tensor Dq, Tensor Dk, Tensor Dv) Backward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor? cos, Tensor? sin, Tensor dOut, double scale)
    {
        var s = ShapeOf(q, k, scale);
        // Gradients in the projections' [B, T, heads, D] layout, returned as [B, heads, T, D] views: the transposes
        // back to the projections' layout upstream are then free.
        var dq = empty([s.Batch, s.T, s.Heads, s.D], q.dtype);
        var dk = empty([s.Batch, s.T, s.KvHeads, s.D], k.dtype);
        var dv = empty([s.Batch, s.T, s.KvHeads, s.D], v.dtype);
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        CausalAttentionKernel.Backward(s, Of(q), Of(k), Of(v), RotaryOf(cos, sin), HeadMajor(o), (float*)Data(lse), HeadMajor(dOut),
            HeadMajor(dq), HeadMajor(dk), HeadMajor(dv), torch.get_num_threads());
        Use.Backward(start);
        return (dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2));
    }

    /// <summary>A [B, heads, T, D] tensor's addressing.</summary>
    static CausalAttentionKernel.Operand Of(Tensor t) => new(Data(t), t.stride(0), t.stride(1), t.stride(2), IsBf16(t));

    /// <summary>A [B, T, heads, D] tensor addressed as [B, heads, T, D].</summary>
    static CausalAttentionKernel.Operand HeadMajor(Tensor t) => new(Data(t), t.stride(0), t.stride(2), t.stride(1), IsBf16(t));

    // TorchSharp's Tensor.bytes refuses strided views; libtorch's data pointer (storage offset included) is what the kernel needs.
    static nint Data(Tensor t) => KernelSupport.Address(t);
}
