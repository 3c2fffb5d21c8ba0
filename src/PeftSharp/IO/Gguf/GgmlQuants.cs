using System.Buffers.Binary;

namespace PeftSharp.IO.Gguf;

/// <summary>
/// ggml's reference encoders, bit for bit (ggml/src/ggml-quants.c; llama-quantize uses the same _ref functions for
/// these types when no importance matrix is given). All arithmetic is single precision, as in C. The k-quants are in
/// <see cref="GgmlKQuants"/>.
/// </summary>
internal static class GgmlQuants
{
    public const int Q8_0Block = 32;

    /// <summary>
    /// quantize_row_q8_0_ref: per block of 32, d = amax/127 stored as fp16, q = roundf(x / d) (half away from zero),
    /// with the multiplier 1/d computed once in float, as ggml does.
    /// </summary>
    public static void QuantizeQ8_0(ReadOnlySpan<float> x, Span<byte> dst)
    {
        if (x.Length % Q8_0Block != 0) throw new ArgumentException($"q8_0 needs a multiple of {Q8_0Block} values, got {x.Length}");
        if (dst.Length != x.Length / Q8_0Block * 34) throw new ArgumentException("q8_0 destination size");
        for (int b = 0; b < x.Length / Q8_0Block; b++)
        {
            var block = x.Slice(b * Q8_0Block, Q8_0Block);
            float amax = 0f;
            foreach (float v in block) amax = MathF.Max(amax, MathF.Abs(v));
            float d = amax / 127f;
            float id = d != 0f ? 1.0f / d : 0.0f;
            var o = dst.Slice(b * 34, 34);
            BinaryPrimitives.WriteHalfLittleEndian(o, (Half)d);
            for (int j = 0; j < Q8_0Block; j++)
                o[2 + j] = unchecked((byte)(sbyte)MathF.Round(block[j] * id, MidpointRounding.AwayFromZero));
        }
    }

    public const int Q4_0Block = 32, Q4_0Bytes = 18; // fp16 d + 16 bytes of nibbles
    public const int Q5_0Block = 32, Q5_0Bytes = 22; // fp16 d + 4 bytes of fifth bits + 16 bytes of nibbles

    /// <summary>
    /// quantize_row_q4_0_ref: per block of 32, d = max / -8 where max is the value of largest magnitude (sign kept),
    /// q = min(15, (int8)(x * (1/d) + 8.5)) (truncation), low half of the block in the low nibbles.
    /// </summary>
    public static void QuantizeQ4_0(ReadOnlySpan<float> x, Span<byte> dst)
    {
        if (x.Length % Q4_0Block != 0) throw new ArgumentException($"q4_0 needs a multiple of {Q4_0Block} values, got {x.Length}");
        for (int b = 0; b < x.Length / Q4_0Block; b++)
        {
            var block = x.Slice(b * Q4_0Block, Q4_0Block);
            float id = SignedMaxInverse(block, -8f, out float d);
            var o = dst.Slice(b * Q4_0Bytes, Q4_0Bytes);
            BinaryPrimitives.WriteHalfLittleEndian(o, (Half)d);
            for (int j = 0; j < 16; j++)
            {
                int lo = Math.Min(15, (int)(sbyte)(block[j] * id + 8.5f));
                int hi = Math.Min(15, (int)(sbyte)(block[j + 16] * id + 8.5f));
                o[2 + j] = (byte)(lo | (hi << 4));
            }
        }
    }

    /// <summary>quantize_row_q5_0_ref: q4_0 with 5 bits (d = max / -16, +16.5, at most 31); the fifth bits packed into a u32.</summary>
    public static void QuantizeQ5_0(ReadOnlySpan<float> x, Span<byte> dst)
    {
        if (x.Length % Q5_0Block != 0) throw new ArgumentException($"q5_0 needs a multiple of {Q5_0Block} values, got {x.Length}");
        for (int b = 0; b < x.Length / Q5_0Block; b++)
        {
            var block = x.Slice(b * Q5_0Block, Q5_0Block);
            float id = SignedMaxInverse(block, -16f, out float d);
            var o = dst.Slice(b * Q5_0Bytes, Q5_0Bytes);
            BinaryPrimitives.WriteHalfLittleEndian(o, (Half)d);
            uint qh = 0;
            for (int j = 0; j < 16; j++)
            {
                int x0 = Math.Min(31, (int)(sbyte)(block[j] * id + 16.5f));
                int x1 = Math.Min(31, (int)(sbyte)(block[j + 16] * id + 16.5f));
                o[6 + j] = (byte)((x0 & 0x0F) | ((x1 & 0x0F) << 4));
                qh |= (uint)((x0 & 0x10) >> 4) << j;
                qh |= (uint)((x1 & 0x10) >> 4) << (j + 16);
            }
            BinaryPrimitives.WriteUInt32LittleEndian(o.Slice(2), qh);
        }
    }

    /// <summary>The value of largest magnitude (the first one on ties, sign kept) divided by <paramref name="levels"/>, and 1/d (0 when d is 0).</summary>
    static float SignedMaxInverse(ReadOnlySpan<float> block, float levels, out float d)
    {
        float amax = 0f, max = 0f;
        foreach (float v in block)
            if (amax < MathF.Abs(v)) { amax = MathF.Abs(v); max = v; }
        d = max / levels;
        return d != 0f ? 1.0f / d : 0.0f;
    }

    /// <summary>
    /// ggml_compute_fp32_to_bf16 (ggml_fp32_to_bf16_row_ref): round to nearest even on the top 16 bits; a NaN stays a
    /// quiet NaN.
    /// </summary>
    public static void ToBF16(ReadOnlySpan<float> x, Span<byte> dst)
    {
        for (int i = 0; i < x.Length; i++)
        {
            uint u = BitConverter.SingleToUInt32Bits(x[i]);
            ushort h = (u & 0x7fffffff) > 0x7f800000 ? (ushort)((u >> 16) | 64) : (ushort)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
            BinaryPrimitives.WriteUInt16LittleEndian(dst.Slice(2 * i, 2), h);
        }
    }

    /// <summary>IEEE half precision, round to nearest even (GGML_FP32_TO_FP16).</summary>
    public static void ToF16(ReadOnlySpan<float> x, Span<byte> dst)
    {
        for (int i = 0; i < x.Length; i++) BinaryPrimitives.WriteHalfLittleEndian(dst.Slice(2 * i, 2), (Half)x[i]);
    }

    public static void ToF32(ReadOnlySpan<float> x, Span<byte> dst)
    {
        for (int i = 0; i < x.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(dst.Slice(4 * i, 4), x[i]);
    }

    /// <summary>Encodes float32 values (row-major, whole rows) as <paramref name="type"/>.</summary>
    public static byte[] Encode(GgmlType type, ReadOnlySpan<float> x)
    {
        var (block, bytes) = GgmlTypes.Traits(type);
        var dst = new byte[x.Length / block * bytes];
        switch (type)
        {
            case GgmlType.F32: ToF32(x, dst); break;
            case GgmlType.F16: ToF16(x, dst); break;
            case GgmlType.BF16: ToBF16(x, dst); break;
            case GgmlType.Q8_0: QuantizeQ8_0(x, dst); break;
            case GgmlType.Q4_0: QuantizeQ4_0(x, dst); break;
            case GgmlType.Q5_0: QuantizeQ5_0(x, dst); break;
            case GgmlType.Q4_K: GgmlKQuants.QuantizeQ4_K(x, dst); break;
            case GgmlType.Q6_K: GgmlKQuants.QuantizeQ6_K(x, dst); break;
            default: throw new NotSupportedException($"writing {type} is not supported yet");
        }
        return dst;
    }
}
