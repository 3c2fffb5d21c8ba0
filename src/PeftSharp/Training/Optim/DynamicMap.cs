using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>
/// bitsandbytes' 8-bit "dynamic" quantisation map (functional.create_dynamic_map, 7 exponent bits): 256 sorted
/// values in [-1, 1] (signed) or [0, 1] (unsigned), dense near zero, used for blockwise optimiser state.
/// Quantisation rounds to the nearest value through a table on the top 16 bits of the float, so it costs one
/// lookup and usually no more than one comparison.
/// </summary>
internal sealed class DynamicMap
{
    public static DynamicMap Signed { get; } = new(true);
    public static DynamicMap Unsigned { get; } = new(false);

    /// <summary>The 256 code values, ascending.</summary>
    public float[] Values { get; }

    readonly float[] _mid;        // _mid[i] = midpoint of Values[i] and Values[i+1]; +inf at 255
    readonly byte[] _firstCode;   // nearest code of the smallest float in each 16-bit bucket

    DynamicMap(bool signed)
    {
        Values = Create(signed);
        _mid = new float[256];
        for (int i = 0; i < 255; i++) _mid[i] = (Values[i] + Values[i + 1]) * 0.5f;
        _mid[255] = float.PositiveInfinity;
        // Three spare bytes so that a vector kernel may gather 4 bytes at any entry (it masks the other three).
        _firstCode = new byte[65536 + 3];
        for (int p = 0; p < 65536; p++)
        {
            // Positive floats grow with their bits, negative ones shrink: the bucket's smallest value is at
            // its low end for positive prefixes and its high end for negative ones.
            uint bits = p < 0x8000 ? (uint)p << 16 : ((uint)p << 16) | 0xFFFF;
            float lo = BitConverter.UInt32BitsToSingle(bits);
            _firstCode[p] = float.IsNaN(lo) ? (byte)(p < 0x8000 ? 255 : 0) : NearestBySearch(lo);
        }
    }

    /// <summary>The 255 midpoints between neighbouring code values (x rounds to code i when Midpoints[i-1] &lt; x &lt;= Midpoints[i]).</summary>
    public ReadOnlySpan<float> Midpoints => _mid.AsSpan(0, 255);

    /// <summary>The 256 midpoints (+inf last) and the 16-bit bucket table, for the vectorised 8-bit AdamW kernel.</summary>
    internal float[] MidpointTable => _mid;
    internal byte[] FirstCodeTable => _firstCode;

    /// <summary>Index of the nearest code (ties to the lower one).</summary>
    public byte Quantize(float x)
    {
        int i = _firstCode[BitConverter.SingleToUInt32Bits(x) >> 16];
        while (x > _mid[i]) i++;
        return (byte)i;
    }

    byte NearestBySearch(float x)
    {
        int lo = 0, hi = 255; // smallest i with x <= _mid[i]
        while (lo < hi)
        {
            int m = (lo + hi) / 2;
            if (x <= _mid[m]) hi = m; else lo = m + 1;
        }
        return (byte)lo;
    }

    /// <summary>
    /// create_dynamic_map(signed, max_exponent_bits=7, total_bits=8), computed with the same float32 torch ops
    /// (linspace, midpoints, scaling by powers of ten) so the values match bit for bit.
    /// </summary>
    static float[] Create(bool signed)
    {
        const int MaxExponentBits = 7, TotalBits = 8, NonSignBits = TotalBits - 1;
        var data = new List<float>();
        using var scope = NewDisposeScope();
        for (int i = 0; i < MaxExponentBits; i++)
        {
            long items = signed ? (1L << (i + NonSignBits - MaxExponentBits)) + 1 : (1L << (i + NonSignBits - MaxExponentBits + 1)) + 1;
            var b = linspace(0.1, 1, items, ScalarType.Float32);
            var means = b.narrow(0, 0, items - 1).Plus(b.narrow(0, 1, items - 1)).DividedBy(2.0);
            double scale = Math.Pow(10, -(MaxExponentBits - 1) + i);
            data.AddRange(means.Times(scale).data<float>().ToArray());
            if (signed) data.AddRange(means.Times(-scale).data<float>().ToArray());
        }
        // additional_items = 2^(non_sign_bits - max_exponent_bits) - 1 = 0 for 7 exponent bits of 8.
        data.Add(0f);
        data.Add(1f);
        if (data.Count != 256) throw new InvalidOperationException($"dynamic map has {data.Count} values, expected 256");
        data.Sort();
        return data.ToArray();
    }
}
