namespace PeftSharp.Memory;

/// <summary>
/// The attention probabilities P = softmax(q k^T) that PeftSharp's CPU attention kernel (Kernels/CausalAttentionKernel)
/// keeps from a training forward for its backward, instead of recomputing q k^T and the exponentials there. One rule
/// for the engine (which keeps them) and the planner (which counts them). fp32, causal rows only: row t of each
/// (batch, head) holds keys 0..t rounded up to 16 (the kernel's vector width), zeros past the diagonal. Kept only while
/// one layer's probabilities fit <see cref="LayerBudgetBytes"/> (they grow with seq^2): beyond it the kernel recomputes
/// them from the row logsumexp as before.
/// </summary>
internal static class KeptAttentionProbabilities
{
    /// <summary>Bytes of kept probabilities allowed per attention layer (about the size of q, k, v and the output at the
    /// LoRA bench's shape, where P is 4.25 MiB).</summary>
    public const long LayerBudgetBytes = 8L << 20;

    /// <summary>Where row <paramref name="t"/> of one (batch, head) starts, in floats: rows before it hold 16, 32, ...
    /// floats, 16 rows of each length.</summary>
    public static long RowStart(long t)
    {
        long a = t >> 4, c = t & 15;
        return 128 * a * (a + 1) + 16 * c * (a + 1);
    }

    /// <summary>Floats of one layer's probabilities, kept or not.</summary>
    public static long Floats(long batch, long heads, long seq) => batch * heads * RowStart(seq);

    /// <summary>Whether a layer of this shape keeps its probabilities (fp32, under <see cref="LayerBudgetBytes"/>).</summary>
    public static bool Keeps(long batch, long heads, long seq) => Floats(batch, heads, seq) * sizeof(float) <= LayerBudgetBytes;

    /// <summary>Bytes one layer keeps: its probabilities where <see cref="Keeps"/>, else 0.</summary>
    public static long Bytes(long batch, long heads, long seq) => Keeps(batch, heads, seq) ? Floats(batch, heads, seq) * sizeof(float) : 0;
}
