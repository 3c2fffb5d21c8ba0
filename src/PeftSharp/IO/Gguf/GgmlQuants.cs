using System.Buffers.Binary;

namespace PeftSharp.IO.Gguf;

/// <summary>
/// ggml's reference encoders, bit for bit (ggml/src/ggml-quants.c; llama-quantize uses the same _ref functions for
/// these types when no importance matrix is given). All arithmetic is single precision, as in C.
/// </summary>
public static class GgmlQuants
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
            case GgmlType.Q8_0: QuantizeQ8_0(x, dst); break;
            default: throw new NotSupportedException($"writing {type} is not supported yet");
        }
        return dst;
    }
}
