using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>Additive attention masks over absolute cache slots.</summary>
internal static class AttentionMask
{
    /// <summary>
    /// Additive mask [B, 1, T, S]: causal over absolute slots, padding keys hidden, the diagonal always open.
    /// With a <paramref name="window"/>, a query at slot i sees only keys j with i - j &lt; window, as transformers'
    /// sliding_window_overlay (kv_idx &gt; q_idx - sliding_window) computes it.
    /// </summary>
    public static Tensor Build(Tensor keyValid, long t, long past, ScalarType dtype, int? window = null)
    {
        using var scope = NewDisposeScope();
        long s = past + t;
        // Numbers as Scalars held until their ops have returned (see ScalarArgs).
        using var minusInfinity = float.NegativeInfinity.ToScalar();
        var qPos = ScalarArgs.Arange(past, s, ScalarType.Int64, keyValid.device).view(t, 1);
        var kPos = ScalarArgs.Arange(s, ScalarType.Int64, keyValid.device).view(1, s);
        var visible = kPos.le(qPos);
        if (window is { } w) visible = visible.logical_and(kPos.gt(qPos.Minus(w)));
        var allowed = visible.unsqueeze(0).logical_and(keyValid.to_type(ScalarType.Bool).unsqueeze(1));  // [B, T, S]
        allowed = allowed.logical_or(kPos.eq(qPos).unsqueeze(0));      // a padded query still sees itself: no NaN rows
        var m = zeros(allowed.shape, dtype, keyValid.device).masked_fill(allowed.logical_not(), minusInfinity);
        return m.unsqueeze(1).MoveToOuterDisposeScope();
    }
}
