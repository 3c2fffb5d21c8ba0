namespace PeftSharp.Data;

/// <summary>
/// SplitMix64: a small seeded generator whose sequence is fixed forever, unlike System.Random's. Every seeded order
/// in PeftSharp comes from it (epoch shuffles, the eval split, the demo data), so saved data positions resume
/// exactly and `peft make-demo` regenerates the bundled files byte for byte. Do not change its arithmetic.
/// </summary>
internal sealed class SplitMix64(ulong seed)
{
    ulong _state = seed;

    /// <summary>The next 64 bits.</summary>
    public ulong Next() => Next(ref _state);

    /// <summary>The next value in [0, <paramref name="n"/>): the next 64 bits mod n.</summary>
    public int Next(int n) => (int)(Next() % (ulong)n);

    public T Pick<T>(IReadOnlyList<T> xs) => xs[Next(xs.Count)];

    /// <summary>Fisher-Yates in place, from the last element down: element i swaps with element Next(i + 1).</summary>
    public void Shuffle<T>(IList<T> xs)
    {
        for (int i = xs.Count - 1; i > 0; i--)
        {
            int j = Next(i + 1);
            (xs[i], xs[j]) = (xs[j], xs[i]);
        }
    }

    /// <summary>One step on a state the caller holds; also a 64-bit mixer (<c>Next(ref hash)</c>).</summary>
    public static ulong Next(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
