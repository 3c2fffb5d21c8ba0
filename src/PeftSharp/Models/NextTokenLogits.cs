using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// The head of a mixed-precision training forward (<see cref="CausalLM.MixedPrecisionTraining"/>): the logits h·Wᵀ
/// from the 16-bit matmul, except each position's logit for the next input token (the causal-LM target), which is one
/// fp32 dot product of the same 16-bit operands, so the target's logit is exact where the rest are rounded to 8
/// significant bits (up to 0.06 at a logit of 16). Near memorisation the loss and its gradient 1 - p are set by the
/// target's margin over the other logits, so that rounding moved them by several percent; the others only matter in
/// proportion to their small probabilities. Cost: a [tokens, hidden] gather and dot product beside a [tokens, vocab]
/// matmul. The logits come out in fp32 (the loss casts them there anyway).
/// </summary>
internal static class NextTokenLogits
{
    /// <summary>Logits [B, T, V] in fp32 for <paramref name="h"/> [B, T, H] and the head weight <paramref name="w"/> [V, H]
    /// (both 16-bit); position t's entry for ids[t + 1] computed in fp32 (the last position's for ids[T - 1]).</summary>
    public static Tensor Forward(Tensor h, Tensor w, Tensor ids)
    {
        using var profile = ForwardProfiler.Measure("lm_head");
        using var scope = NewDisposeScope();
        var logits16 = nn.functional.linear(h, w);
        long t = ids.shape[1];
        var next = (t > 1 ? cat([ids.narrow(1, 1, t - 1), ids.narrow(1, t - 1, 1)], 1) : ids).to(ScalarType.Int64, h.device).unsqueeze(-1);
        var rows = w.index_select(0, next.flatten()).view(h.shape);
        var exact = (rows.to_type(ScalarType.Float32) * h.to_type(ScalarType.Float32)).sum(-1, keepdim: true);
        return WithExact.apply(logits16, next, exact).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// fp32 logits = the 16-bit ones with the exact values written at <c>next</c>. Backward: the gradient cast to the
    /// 16-bit dtype with the next-token entries zeroed (theirs flows through the fp32 dot product) and those entries
    /// gathered for it: one cast of the [.., V] gradient, as the loss's own cast needed, and no fp32 copy of it.
    /// </summary>
    sealed class WithExact : autograd.SingleTensorFunction<WithExact>
    {
        public override string Name => "NextTokenLogits";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (logits16, next, exact) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2]);
            ctx.save_for_backward([next]);
            ctx.save_data("dtype", logits16.dtype);
            return logits16.to_type(ScalarType.Float32).scatter_(-1, next, exact);
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            var next = ctx.get_saved_variables()[0];
            var dtype = (ScalarType)ctx.get_data("dtype");
            var grad16 = grad.to_type(dtype).scatter_(-1, next, zeros(next.shape, dtype, grad.device));
            return [grad16, null!, grad.gather(-1, next)];
        }
    }
}
