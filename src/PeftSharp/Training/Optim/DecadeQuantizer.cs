using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftSharp.Training.Optim;

/// <summary>
/// A <see cref="DynamicMap"/>'s nearest code for 16 floats at a time with AVX-512 and no memory lookups: the map's
/// positive codes come in decades (bitsandbytes' dynamic map: 2^d or 2^(d+1) evenly spaced values per power of ten),
/// so within a decade the code is a linear function of x, truncated. The decade is found from the float's binary
/// exponent (a 32-entry table in two registers: the decades below the octave, and the one decade boundary an octave can
/// hold, compared exactly), its line from three 16-entry tables in registers. This replaces one gather per 8 floats into
/// the 256 KiB rule table (<see cref="DynamicMap.BucketRuleTable"/>), which bounded the 8-bit AdamW kernel (a gather
/// costs ~15 cycles on Zen 4 whether the table is in L1 or L2; measured).
/// <para>
/// Exact: the line puts every midpoint of the decade within <see cref="Band"/>/2 of an integer (checked when the
/// tables are built, in the float arithmetic the kernel uses), and a lane whose value lands within <see cref="Band"/>
/// of an integer, sits exactly on a decade boundary, or is negative (unsigned map), infinite or NaN is flagged and
/// takes <see cref="DynamicMap.Quantize"/> instead (a few lanes in ten thousand). Negative floats of the signed map use
/// its mirror symmetry: its negative values are the positive ones negated (bitsandbytes multiplies by -scale), so the
/// code of -y is 254 minus the code of y (the value 1 has no negative twin: 0, the most negative code, below it).
/// Tests compare with the search on every decade's midpoints and their neighbours and on floats of every exponent.
/// </para>
/// </summary>
internal sealed class DecadeQuantizer
{
    /// <summary>Half-width, in code units, of the band around a code boundary where a lane falls back to the search.</summary>
    const float Band = 1f / 1024;

    /// <summary>Biased exponent of the first octave in the table: octaves below it (and zero, subnormals) are all below the map's first boundary.</summary>
    const int FirstExponent = 96;

    public static bool IsSupported => Avx512F.IsSupported && Avx512BW.IsSupported && Avx512DQ.IsSupported;

    readonly DynamicMap _map;
    readonly bool _signed;
    readonly int _zeroCode;
    // By octave (exponent - FirstExponent, clamped to 0..31): the decades wholly below it, and the boundary inside it (+inf: none).
    readonly Vector512<int> _below0, _below1;
    readonly Vector512<float> _split0, _split1;
    // By decade index D (0: the zero code, 8: the code of 1): code = min(trunc(x * slope - offset), top).
    readonly Vector512<float> _slope, _offset;
    readonly Vector512<int> _top;

    /// <summary>The quantiser for <paramref name="map"/>, or null where its values do not have the decade structure this needs.</summary>
    public static DecadeQuantizer? For(DynamicMap map, bool signed)
    {
        try { return new DecadeQuantizer(map, signed); }
        catch (InvalidOperationException) { return null; }
    }

    DecadeQuantizer(DynamicMap map, bool signed)
    {
        _map = map;
        _signed = signed;
        var v = map.Values;
        var mid = map.Midpoints.ToArray();
        _zeroCode = Array.IndexOf(v, 0f);
        if (_zeroCode != (signed ? 127 : 0) || v[255] != 1f) throw new InvalidOperationException("not a dynamic map");
        // The positive codes between zero and 1, grouped by power of ten.
        var firsts = new List<int>();
        var counts = new List<int>();
        for (int c = _zeroCode + 1; c < 255; c++)
        {
            int decade = (int)Math.Floor(Math.Log10(v[c]));
            if (c == _zeroCode + 1 || decade != (int)Math.Floor(Math.Log10(v[c - 1]))) { firsts.Add(c); counts.Add(0); }
            counts[^1]++;
        }
        if (firsts.Count != 7) throw new InvalidOperationException("not seven decades");
        // Decade index D counts the boundaries below x: D = 1..7 the decades, 8 the code of 1.
        var boundaries = firsts.Select(f => mid[f - 1]).Append(mid[254]).ToArray();
        var slope = new float[16];
        var offset = new float[16];
        var top = new int[16];
        (slope[0], offset[0], top[0]) = (0, -(_zeroCode + 0.5f), _zeroCode);
        (slope[8], offset[8], top[8]) = (0, -255.5f, 255);
        for (int d = 0; d < 7; d++)
        {
            int first = firsts[d], n = counts[d];
            (slope[d + 1], offset[d + 1]) = Line(v, mid, first, n);
            top[d + 1] = first + n - 1;
            // Every midpoint inside the decade within Band/2 of its integer; the decade's lower boundary above the first
            // code's integer by more than the band (so no x above it truncates below the decade).
            for (int j = 0; j < n - 1; j++)
            {
                float t = MathF.FusedMultiplyAdd(mid[first + j], slope[d + 1], -offset[d + 1]);
                WorstMidpointOffset = Math.Max(WorstMidpointOffset, Math.Abs(t - (first + j + 1)));
                if (Math.Abs(t - (first + j + 1)) > Band / 2) throw new InvalidOperationException($"midpoint {first + j} off its line");
            }
            float atBoundary = MathF.FusedMultiplyAdd(boundaries[d], slope[d + 1], -offset[d + 1]);
            if (!(atBoundary >= first + Band)) throw new InvalidOperationException($"decade {d} starts below its first code");
        }
        var below = new int[32];
        var split = new float[32];
        for (int i = 0; i < 32; i++)
        {
            float lo = BitConverter.UInt32BitsToSingle((uint)(FirstExponent + i) << 23);
            float hi = i == 31 ? float.PositiveInfinity : lo * 2;
            below[i] = boundaries.Count(b => b < lo);
            var inside = boundaries.Where(b => b >= lo && b < hi).ToArray();
            if (inside.Length > 1) throw new InvalidOperationException("two decade boundaries in one octave");
            split[i] = inside.Length == 1 ? inside[0] : float.PositiveInfinity;
        }
        // Octave 0 also takes every smaller float (zero, subnormals), so no boundary may lie below it; octave 31 is [1, 2)
        // (larger floats are flagged), above every boundary.
        if (below[0] != 0 || below[31] != 8) throw new InvalidOperationException("boundaries outside the octave table");
        _below0 = Vector512.Create(below.AsSpan(0, 16)); _below1 = Vector512.Create(below.AsSpan(16, 16));
        _split0 = Vector512.Create(split.AsSpan(0, 16)); _split1 = Vector512.Create(split.AsSpan(16, 16));
        _slope = Vector512.Create(slope); _offset = Vector512.Create(offset); _top = Vector512.Create(top);
    }

    /// <summary>The largest distance, in code units, of a midpoint from its integer on its decade's line (the band must exceed it).</summary>
    internal float WorstMidpointOffset { get; private set; }

    /// <summary>
    /// The decade's line t = x * slope - offset through its points (value k at first + k + 0.5, midpoint k at first + k + 1),
    /// least squares in double; a decade of one value gets a flat line at its code + 0.5.
    /// </summary>
    static (float Slope, float Offset) Line(float[] v, float[] mid, int first, int n)
    {
        if (n == 1) return (0, -(first + 0.5f));
        var xs = new List<double>();
        var ts = new List<double>();
        for (int k = 0; k < n; k++) { xs.Add(v[first + k]); ts.Add(first + k + 0.5); }
        for (int k = 0; k < n - 1; k++) { xs.Add(mid[first + k]); ts.Add(first + k + 1); }
        double mx = xs.Average(), mt = ts.Average(), sxx = 0, sxt = 0;
        for (int i = 0; i < xs.Count; i++) { sxx += (xs[i] - mx) * (xs[i] - mx); sxt += (xs[i] - mx) * (ts[i] - mt); }
        double s = sxt / sxx;
        return ((float)s, (float)(mx * s - mt));
    }

    /// <summary>The codes of 16 floats; lanes set in <paramref name="fallback"/> must be quantised by <see cref="DynamicMap.Quantize"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    Vector128<byte> Codes(Vector512<float> x, bool signed, out Vector512<float> fallback)
    {
        var bits = x.AsInt32();
        var y = signed ? Avx512F.And(bits, Vector512.Create(0x7FFFFFFF)).AsSingle() : x;
        // The exponent less FirstExponent, saturating at 0 (in 16-bit lanes: the exponent fits the low one, the high one
        // stays 0); floats of 2 and more would index past 31 and are flagged below.
        var octave = Avx512BW.SubtractSaturate(Avx512F.ShiftRightLogical(y.AsInt32(), 23).AsUInt16(), Vector512.Create(FirstExponent).AsUInt16()).AsInt32();
        var split = Avx512F.PermuteVar16x32x2(_split0, octave, _split1);
        var above = Avx512F.CompareGreaterThan(y, split).AsInt32();   // -1 where x is past the octave's boundary
        var decade = Avx512F.PermuteVar16x32x2(_below0, octave, _below1) - above;
        var t = Avx512F.FusedMultiplySubtract(y, Avx512F.PermuteVar16x32(_slope, decade), Avx512F.PermuteVar16x32(_offset, decade));
        var code = Avx512F.Min(Avx512F.ConvertToVector512Int32WithTruncation(t), Avx512F.PermuteVar16x32(_top, decade));
        var nearBoundary = Avx512F.CompareLessThan(Vector512.Abs(Avx512DQ.Reduce(t, 0)), Vector512.Create(Band));   // |t - round(t)|
        // 2 and above (the octave table ends at [1, 2)), infinities and NaN; unsigned map: negative floats, whose sign bit
        // makes them large unsigned numbers.
        var special = Avx512F.CompareGreaterThanOrEqual(y.AsUInt32(), Vector512.Create(0x40000000u)).AsSingle();
        fallback = nearBoundary | special;
        if (signed)
        {
            var negative = Avx512F.CompareLessThan(bits, Vector512<int>.Zero);
            code = Vector512.ConditionalSelect(negative, Avx512F.Max(Vector512.Create(254) - code, Vector512<int>.Zero), code);
            // -y exactly on a boundary rounds to the lower code, which is the mirror's upper one.
            fallback |= Avx512F.CompareEqual(y, split);
        }
        return Avx512F.ConvertToVector128Byte(code);
    }

    /// <summary>codes[j] = map.Quantize(x[j] * inv) for j in [0, len), len a multiple of 16.</summary>
    public unsafe void Quantize(float* x, float inv, byte* codes, int len)
    {
        if (_signed) Quantize(x, inv, codes, len, signed: true);
        else Quantize(x, inv, codes, len, signed: false);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    unsafe void Quantize(float* x, float inv, byte* codes, int len, bool signed)
    {
        var invV = Vector512.Create(inv);
        for (int j = 0; j < len; j += 16)
        {
            Vector128.Store(Codes(Vector512.Load(x + j) * invV, signed, out var fallback), codes + j);
            ulong lanes = fallback.ExtractMostSignificantBits();
            if (lanes != 0) Search(x + j, inv, codes + j, lanes);
        }
    }

    /// <summary>The flagged lanes by the map's own search (kept out of the loop so the loop keeps its registers).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    unsafe void Search(float* x, float inv, byte* codes, ulong lanes)
    {
        for (; lanes != 0; lanes &= lanes - 1)
        {
            int l = System.Numerics.BitOperations.TrailingZeroCount(lanes);
            codes[l] = _map.Quantize(x[l] * inv);
        }
    }
}
