using System.Buffers.Binary;

namespace PeftSharp.IO.Gguf;

/// <summary>
/// ggml's dequantisers (ggml/src/ggml-quants.c dequantize_row_*, ggml.c's fp16/bf16 conversions), bit for bit: the
/// same single-precision operations in the same order, so a GGUF base loads to exactly the floats llama.cpp's
/// <c>to_float</c> gives (checked against libggml-base's own type traits in GgufDequantTests).
/// </summary>
internal static class GgufDequant
{
    /// <summary>ggml's type names by id (ggml.c type_traits), for errors about types PeftSharp does not read.</summary>
    static readonly Dictionary<uint, string> Names = new()
    {
        [0] = "f32", [1] = "f16", [2] = "q4_0", [3] = "q4_1", [6] = "q5_0", [7] = "q5_1", [8] = "q8_0", [9] = "q8_1",
        [10] = "q2_K", [11] = "q3_K", [12] = "q4_K", [13] = "q5_K", [14] = "q6_K", [15] = "q8_K", [16] = "iq2_xxs",
        [17] = "iq2_xs", [18] = "iq3_xxs", [19] = "iq1_s", [20] = "iq4_nl", [21] = "iq3_s", [22] = "iq2_s",
        [23] = "iq4_xs", [24] = "i8", [25] = "i16", [26] = "i32", [27] = "i64", [28] = "f64", [29] = "iq1_m",
        [30] = "bf16", [34] = "tq1_0", [35] = "tq2_0", [39] = "mxfp4",
    };

    /// <summary>"q4_K" for 12; "type 99" for an id ggml does not define either.</summary>
    public static string TypeName(uint type) => Names.TryGetValue(type, out var n) ? n : $"type {type}";

    public static bool IsNamed(uint type) => Names.ContainsKey(type);

    /// <summary>The types <see cref="ToFloat(GgmlType, ReadOnlySpan{byte}, Span{float})"/> decodes.</summary>
    static readonly GgmlType[] Readable =
    [
        GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1,
        GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
    ];

    public static bool CanRead(GgmlType type) => Readable.Contains(type);

    /// <summary>The types this class decodes, by ggml's names.</summary>
    public static string Supported => string.Join(", ", Readable.Select(t => TypeName((uint)t)));

    /// <summary>Decodes <paramref name="src"/> (whole blocks of <paramref name="type"/>) into <paramref name="dst"/>.</summary>
    public static void ToFloat(GgmlType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        var (block, bytes) = GgmlTypes.Traits(type);
        if (dst.Length % block != 0 || src.Length != dst.Length / block * bytes)
            throw new ArgumentException($"{TypeName((uint)type)}: {src.Length} bytes do not hold {dst.Length} values");
        int nb = dst.Length / block;
        switch (type)
        {
            case GgmlType.F32:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadSingleLittleEndian(src[(4 * i)..]);
                break;
            case GgmlType.F16:
                for (int i = 0; i < dst.Length; i++) dst[i] = Half(src, 2 * i);
                break;
            case GgmlType.BF16:
                // GGML_BF16_TO_FP32: the 16 bits are the float's upper half.
                for (int i = 0; i < dst.Length; i++) dst[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(src[(2 * i)..]) << 16);
                break;
            case GgmlType.Q8_0:
                for (int b = 0; b < nb; b++)
                {
                    var x = src.Slice(b * 34, 34);
                    float d = Half(x, 0);
                    for (int j = 0; j < 32; j++) dst[b * 32 + j] = (sbyte)x[2 + j] * d;
                }
                break;
            case GgmlType.Q4_0:
                for (int b = 0; b < nb; b++)
                {
                    var x = src.Slice(b * 18, 18);
                    float d = Half(x, 0);
                    var y = dst.Slice(b * 32, 32);
                    for (int j = 0; j < 16; j++)
                    {
                        y[j] = ((x[2 + j] & 0x0F) - 8) * d;
                        y[j + 16] = ((x[2 + j] >> 4) - 8) * d;
                    }
                }
                break;
            case GgmlType.Q4_1:
                for (int b = 0; b < nb; b++)
                {
                    var x = src.Slice(b * 20, 20);
                    float d = Half(x, 0), m = Half(x, 2);
                    var y = dst.Slice(b * 32, 32);
                    for (int j = 0; j < 16; j++)
                    {
                        y[j] = Fma(x[4 + j] & 0x0F, d, m);
                        y[j + 16] = Fma(x[4 + j] >> 4, d, m);
                    }
                }
                break;
            case GgmlType.Q5_0:
            case GgmlType.Q5_1:
            {
                bool q51 = type == GgmlType.Q5_1;
                int size = q51 ? 24 : 22, qhAt = q51 ? 4 : 2;
                for (int b = 0; b < nb; b++)
                {
                    var x = src.Slice(b * size, size);
                    float d = Half(x, 0), m = q51 ? Half(x, 2) : 0f;
                    uint qh = BinaryPrimitives.ReadUInt32LittleEndian(x[qhAt..]);
                    var qs = x[(qhAt + 4)..];
                    var y = dst.Slice(b * 32, 32);
                    for (int j = 0; j < 16; j++)
                    {
                        int xh0 = (int)(((qh >> j) << 4) & 0x10), xh1 = (int)((qh >> (j + 12)) & 0x10);
                        int x0 = (qs[j] & 0x0F) | xh0, x1 = (qs[j] >> 4) | xh1;
                        if (q51) { y[j] = Fma(x0, d, m); y[j + 16] = Fma(x1, d, m); }
                        else { y[j] = (x0 - 16) * d; y[j + 16] = (x1 - 16) * d; }
                    }
                }
                break;
            }
            case GgmlType.Q4_K:
                for (int b = 0; b < nb; b++) Q4K(src.Slice(b * 144, 144), dst.Slice(b * 256, 256));
                break;
            case GgmlType.Q5_K:
                for (int b = 0; b < nb; b++) Q5K(src.Slice(b * 176, 176), dst.Slice(b * 256, 256));
                break;
            case GgmlType.Q6_K:
                for (int b = 0; b < nb; b++) Q6K(src.Slice(b * 210, 210), dst.Slice(b * 256, 256));
                break;
            default:
                throw new NotSupportedException($"dequantising {TypeName((uint)type)} is not supported");
        }
    }

    public static float[] ToFloat(GgmlType type, ReadOnlySpan<byte> src, long count)
    {
        var dst = new float[count];
        ToFloat(type, src, dst);
        return dst;
    }

    static float Half(ReadOnlySpan<byte> s, int at) => (float)BinaryPrimitives.ReadHalfLittleEndian(s[at..]);

    // ggml's x*d + m lines are contracted to one fused multiply-add by the compiler that builds ggml
    // (-ffp-contract=fast on an FMA target); GgufDequantTests pins which form ggml's own build uses.
    static float Fma(int q, float d, float m) => MathF.FusedMultiplyAdd(q, d, m);

    /// <summary>dequantize_row_q4_K: 8 sub-blocks of 32 with 6-bit scales and mins (get_scale_min_k4).</summary>
    static void Q4K(ReadOnlySpan<byte> x, Span<float> y)
    {
        float d = Half(x, 0), min = Half(x, 2);
        var scales = x.Slice(4, 12);
        var q = x[16..];
        int o = 0, qi = 0;
        for (int j = 0, isub = 0; j < 256; j += 64, isub += 2)
        {
            var (sc1, m1) = ScaleMinK4(isub, scales);
            var (sc2, m2) = ScaleMinK4(isub + 1, scales);
            float d1 = d * sc1, mm1 = min * m1, d2 = d * sc2, mm2 = min * m2;
            for (int l = 0; l < 32; l++) y[o++] = FmaSub(d1, q[qi + l] & 0x0F, mm1);
            for (int l = 0; l < 32; l++) y[o++] = FmaSub(d2, q[qi + l] >> 4, mm2);
            qi += 32;
        }
    }

    /// <summary>dequantize_row_q5_K: q4_K's layout plus a fifth bit per value from qh (two bit planes per 64 values).</summary>
    static void Q5K(ReadOnlySpan<byte> x, Span<float> y)
    {
        float d = Half(x, 0), min = Half(x, 2);
        var scales = x.Slice(4, 12);
        var qh = x.Slice(16, 32);
        var ql = x[48..];
        int o = 0, qi = 0, u1 = 1, u2 = 2;
        for (int j = 0, isub = 0; j < 256; j += 64, isub += 2)
        {
            var (sc1, m1) = ScaleMinK4(isub, scales);
            var (sc2, m2) = ScaleMinK4(isub + 1, scales);
            float d1 = d * sc1, mm1 = min * m1, d2 = d * sc2, mm2 = min * m2;
            for (int l = 0; l < 32; l++) y[o++] = FmaSub(d1, (ql[qi + l] & 0x0F) + ((qh[l] & u1) != 0 ? 16 : 0), mm1);
            for (int l = 0; l < 32; l++) y[o++] = FmaSub(d2, (ql[qi + l] >> 4) + ((qh[l] & u2) != 0 ? 16 : 0), mm2);
            qi += 32;
            u1 <<= 2;
            u2 <<= 2;
        }
    }

    // d1 * q - m1, contracted like the q4_1/q5_1 lines (see Fma).
    static float FmaSub(float d, int q, float m) => MathF.FusedMultiplyAdd(d, q, -m);

    static (int Scale, int Min) ScaleMinK4(int j, ReadOnlySpan<byte> q) => j < 4
        ? (q[j] & 63, q[j + 4] & 63)
        : ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4));

    /// <summary>dequantize_row_q6_K: 16 sub-blocks of 16 with int8 scales, 6-bit values from 4 low + 2 high bits.</summary>
    static void Q6K(ReadOnlySpan<byte> x, Span<float> y)
    {
        var ql = x[..128];
        var qh = x.Slice(128, 64);
        var sc = x.Slice(192, 16);
        float d = Half(x, 208);
        for (int n = 0, lo = 0, hi = 0, s = 0; n < 256; n += 128, lo += 64, hi += 32, s += 8)
        {
            var yy = y.Slice(n, 128);
            for (int l = 0; l < 32; l++)
            {
                int iss = l / 16;
                int q1 = ((ql[lo + l] & 0xF) | (((qh[hi + l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[lo + l + 32] & 0xF) | (((qh[hi + l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[lo + l] >> 4) | (((qh[hi + l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[lo + l + 32] >> 4) | (((qh[hi + l] >> 6) & 3) << 4)) - 32;
                yy[l] = d * (sbyte)sc[s + iss] * q1;
                yy[l + 32] = d * (sbyte)sc[s + iss + 2] * q2;
                yy[l + 64] = d * (sbyte)sc[s + iss + 4] * q3;
                yy[l + 96] = d * (sbyte)sc[s + iss + 6] * q4;
            }
        }
    }
}
