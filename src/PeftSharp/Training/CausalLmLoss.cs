using PeftSharp.Data;
using PeftSharp.Kernels;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>Next-token cross entropy: logits at position t predict labels at t+1; labels of -100 carry no loss.</summary>
internal static class CausalLmLoss
{
    /// <summary>The summed (not averaged) loss in fp32, so micro-batches can be normalised by the step's total target count.</summary>
    /// <remarks>
    /// The labels move, not the logits: position t is scored against labels[t+1] and the last position against
    /// the ignore index. Narrowing the logits to T-1 positions instead makes a [B, T-1, V] copy to flatten them (the
    /// narrowed rows are not contiguous) and a zero-filled [B, T, V] gradient to scatter back into; this way the
    /// logits are read as they are (a view, when already fp32) and the loss sums the same terms.
    /// </remarks>
    public static Tensor Sum(Tensor logits, Tensor labels)
    {
        using var profile = ForwardProfiler.Measure("loss (cross entropy)");
        using var scope = NewDisposeScope();
        long b = logits.shape[0], t = logits.shape[1], v = logits.shape[2];
        var flat = logits.to_type(ScalarType.Float32).reshape(-1, v);
        var ignore = ScalarArgs.With((long)TokenSequence.Ignore, ig => full(b, 1, ig, labels.dtype, labels.device));
        var targets = cat([labels.narrow(1, 1, t - 1), ignore], 1).reshape(-1);
        // CPU fp32 with AVX-512F or AVX2 + FMA: one pass each way (Kernels/CrossEntropy), no [N, V] log_softmax kept for backward.
        var loss = CrossEntropy.Applies(flat)
            ? CrossEntropy.Sum(flat, targets)
            : nn.functional.cross_entropy(flat, targets, ignore_index: TokenSequence.Ignore, reduction: nn.Reduction.Sum);
        return loss.MoveToOuterDisposeScope();
    }
}
