namespace PeftSharp.Memory;

/// <summary>
/// Byte arithmetic that stops at <see cref="long.MaxValue"/> instead of wrapping. An absurd request (batch x seq or
/// max_batch x context of 10^16 tokens) gives terms past 2^63 bytes; wrapped, a total came out small or negative and
/// "fit" every GPU. Saturated, it fits none. Counts here are never negative.
/// </summary>
internal static class SaturatingBytes
{
    /// <summary>The sum of non-negative byte counts, at most <see cref="long.MaxValue"/>.</summary>
    public static long Sum(params long[] terms)
    {
        long total = 0;
        foreach (long t in terms) total = t > long.MaxValue - total ? long.MaxValue : total + t;
        return total;
    }

    /// <summary>The product of non-negative factors, at most <see cref="long.MaxValue"/>.</summary>
    public static long Product(params long[] factors)
    {
        long total = 1;
        foreach (long f in factors)
        {
            if (f == 0) return 0;
            total = total > long.MaxValue / f ? long.MaxValue : total * f;
        }
        return total;
    }
}
