namespace PeftSharp.Memory;

/// <summary>How a tensor is stored, which decides its bytes per element.</summary>
public enum DType
{
    /// <summary>32-bit float: 4 bytes.</summary>
    Fp32,
    /// <summary>bfloat16: 2 bytes.</summary>
    Bf16,
    /// <summary>IEEE half: 2 bytes.</summary>
    Fp16,
    /// <summary>bitsandbytes 4-bit NormalFloat with double quantisation: 4.127 bits per weight (64-element blocks).</summary>
    Nf4,
}

internal static class Dtypes
{
    /// <summary>NF4 block size (elements per fp32 absmax before double quantisation).</summary>
    public const int Nf4BlockSize = 64;

    /// <summary>Double quantisation groups this many first-level absmax values under one fp32 scale.</summary>
    public const int Nf4NestedBlockSize = 256;

    /// <summary>Bytes of one element. NF4 reports the double-quantised average, 4.127 bits.</summary>
    public static double BytesPerElement(DType dtype) => dtype switch
    {
        DType.Fp32 => 4,
        DType.Bf16 or DType.Fp16 => 2,
        DType.Nf4 => (4.0 + 8.0 / Nf4BlockSize + 32.0 / (Nf4BlockSize * Nf4NestedBlockSize)) / 8.0,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>Exact bytes of an NF4 + double-quant tensor: packed nibbles, 8-bit absmax per block,
    /// fp32 scale per nested block. The two 16/256-entry code tables per tensor are ignored (under 1.1 KB).</summary>
    public static long Nf4Bytes(long elements)
    {
        long blocks = CeilDiv(elements, Nf4BlockSize);
        return CeilDiv(elements, 2) + blocks + 4 * CeilDiv(blocks, Nf4NestedBlockSize);
    }

    /// <summary>Bytes of a tensor of this many elements stored in the dtype.</summary>
    public static long Bytes(DType dtype, long elements) =>
        dtype == DType.Nf4 ? Nf4Bytes(elements) : elements * (long)BytesPerElement(dtype);

    public static bool Is16Bit(DType dtype) => dtype is DType.Bf16 or DType.Fp16;

    public static DType Parse(string text, string field) => text.Trim().ToLowerInvariant() switch
    {
        "fp32" or "float32" or "f32" => DType.Fp32,
        "bf16" or "bfloat16" => DType.Bf16,
        "fp16" or "float16" or "f16" or "half" => DType.Fp16,
        "nf4" => DType.Nf4,
        _ => throw new PlanException(field, $"unknown dtype '{text}' (expected fp32, bf16, fp16 or nf4)"),
    };

    public static string Name(DType dtype) => dtype.ToString().ToLowerInvariant();

    internal static long CeilDiv(long a, long b) => (a + b - 1) / b;
}
