using PeftSharp.Data;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>Next-token cross entropy: logits at position t predict labels at t+1; labels of -100 carry no loss.</summary>
internal static class CausalLmLoss
{
    /// <summary>The summed (not averaged) loss in fp32, so micro-batches can be normalised by the step's total target count.</summary>
    public static Tensor Sum(Tensor logits, Tensor labels)
    {
        using var scope = NewDisposeScope();
        long t = logits.shape[1], v = logits.shape[2];
        var shifted = logits.narrow(1, 0, t - 1).to_type(ScalarType.Float32).reshape(-1, v);
        var targets = labels.narrow(1, 1, t - 1).reshape(-1);
        var loss = nn.functional.cross_entropy(shifted, targets, ignore_index: TokenSequence.Ignore, reduction: nn.Reduction.Sum);
        return loss.MoveToOuterDisposeScope();
    }
}
