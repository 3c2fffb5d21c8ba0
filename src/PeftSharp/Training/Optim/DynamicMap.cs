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
    readonly uint[] _bucketRule;  // per bucket: its first code and the low-16-bit threshold past which the next one

    DynamicMap(bool signed)
    {
        Values = Create(signed);
        _mid = new float[256];
        for (int i = 0; i < 255; i++) _mid[i] = (Values[i] + Values[i + 1]) * 0.5f;
        _mid[255] = float.PositiveInfinity;
        _firstCode = new byte[65536];
        for (int p = 0; p < 65536; p++)
        {
            // Positive floats grow with their bits, negative ones shrink: the bucket's smallest value is at
            // its low end for positive prefixes and its high end for negative ones.
            uint bits = p < 0x8000 ? (uint)p << 16 : ((uint)p << 16) | 0xFFFF;
            float lo = BitConverter.UInt32BitsToSingle(bits);
            _firstCode[p] = float.IsNaN(lo) ? (byte)(p < 0x8000 ? 255 : 0) : NearestBySearch(lo);
        }
        _bucketRule = BucketRules(_firstCode, _mid);
        ValuePlanes = CodeTableLookup.Planes(Values);
    }

    /// <summary>
    /// One 32-bit rule per 16-bit bucket that gives the nearest code without a search: the map's midpoints are far
    /// enough apart that no bucket holds two (checked here), so within a bucket the code is its first code, plus one
    /// past the single midpoint it may hold. A float's low 16 bits order the floats of its bucket by value (reversed
    /// for negative floats, so the vector kernel flips them: <c>key = low16 ^ (negative ? 0xFFFF : 0)</c>); the rule
    /// is <c>firstCode | threshold &lt;&lt; 8</c>, and the code is <c>firstCode + (key &gt; threshold)</c>. A bucket
    /// with no midpoint has threshold 0xFFFF, which no key exceeds. Equal to <see cref="Quantize"/> for every float,
    /// NaN and infinities included (its first code is what the search returns for them); the tests check it.
    /// </summary>
    static uint[] BucketRules(byte[] firstCode, float[] mid)
    {
        var rules = new uint[65536];
        var holdsMidpoint = new bool[65536];
        for (int p = 0; p < 65536; p++) rules[p] = firstCode[p] | 0xFFFFu << 8;
        for (int i = 0; i < 255; i++)
        {
            uint bits = BitConverter.SingleToUInt32Bits(mid[i]);
            int p = (int)(bits >> 16);
            uint low = bits & 0xFFFF;
            if (holdsMidpoint[p] || firstCode[p] != i)
                throw new InvalidOperationException($"dynamic map: bucket {p:X4} holds more than one midpoint (code {i})");
            // x rounds up past mid[i] when x > mid[i]: low16 > low for positive floats, low16 < low for negative ones.
            uint threshold = p < 0x8000 ? low : 0xFFFF - low;
            rules[p] = (uint)i | threshold << 8;
            holdsMidpoint[p] = true;
        }
        return rules;
    }

    /// <summary>The nearest code through <see cref="BucketRuleTable"/>, as the vector kernel computes it (tests compare it with <see cref="Quantize"/>).</summary>
    internal byte QuantizeByRule(float x)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        uint rule = _bucketRule[bits >> 16];
        uint key = (bits & 0xFFFF) ^ ((bits >> 31) * 0xFFFF);
        return (byte)((rule & 0xFF) + (key > rule >> 8 ? 1 : 0));
    }

    /// <summary>The 255 midpoints between neighbouring code values (x rounds to code i when Midpoints[i-1] &lt; x &lt;= Midpoints[i]).</summary>
    public ReadOnlySpan<float> Midpoints => _mid.AsSpan(0, 255);

    /// <summary>The code values as byte planes for <see cref="CodeTableLookup"/>.</summary>
    internal byte[] ValuePlanes { get; }

    /// <summary>The 16-bit buckets' rules (<see cref="BucketRules"/>), for the vectorised 8-bit AdamW kernel.</summary>
    internal uint[] BucketRuleTable => _bucketRule;

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
