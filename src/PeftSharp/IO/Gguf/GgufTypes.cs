namespace PeftSharp.IO.Gguf;

/// <summary>Metadata value types of GGUF v3 (ggml/docs/gguf.md, gguf-py/gguf/constants.py GGUFValueType).</summary>
internal enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8, Array = 9,
    UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>The ggml tensor types PeftSharp writes or reads (values from ggml.h / constants.py GGMLQuantizationType).</summary>
internal enum GgmlType : uint
{
    F32 = 0, F16 = 1, Q4_0 = 2, Q5_0 = 6, Q8_0 = 8, Q4_K = 12, Q6_K = 14, BF16 = 30,
    // Read only (GgufDequant): the other types llama-quantize writes (q4_1, q5_1 files; q5_K in q5_K_M files).
    Q4_1 = 3, Q5_1 = 7, Q5_K = 13,
}

/// <summary>general.file_type (constants.py LlamaFileType): what most tensors of the file are.</summary>
internal enum GgufFileType : uint
{
    AllF32 = 0, MostlyF16 = 1, MostlyQ4_0 = 2, MostlyQ8_0 = 7, MostlyQ4_K_M = 15, MostlyBF16 = 32,
}

/// <summary>Block geometry and byte sizes of the ggml types.</summary>
internal static class GgmlTypes
{
    /// <summary>Elements per block and bytes per block (ggml's type traits).</summary>
    public static (int BlockSize, int BlockBytes) Traits(GgmlType t) => t switch
    {
        GgmlType.F32 => (1, 4),
        GgmlType.F16 => (1, 2),
        GgmlType.BF16 => (1, 2),
        GgmlType.Q8_0 => (32, 34),  // fp16 scale + 32 int8
        GgmlType.Q4_0 => (32, 18),  // fp16 scale + 16 bytes of nibbles
        GgmlType.Q4_1 => (32, 20),  // fp16 scale and min + 16 bytes of nibbles
        GgmlType.Q5_0 => (32, 22),  // fp16 scale + 4 bytes of fifth bits + 16 bytes of nibbles
        GgmlType.Q5_1 => (32, 24),  // fp16 scale and min + 4 bytes of fifth bits + 16 bytes of nibbles
        GgmlType.Q4_K => (256, 144), // fp16 d, fp16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
        GgmlType.Q5_K => (256, 176), // q4_K's fields + 32 bytes of fifth bits before the nibbles
        GgmlType.Q6_K => (256, 210), // 128 bytes low nibbles, 64 bytes high bits, 16 int8 scales, fp16 d
        _ => throw new InvalidDataException($"unsupported ggml tensor type {(uint)t}"),
    };

    public static bool IsKnown(uint t) => Enum.IsDefined(typeof(GgmlType), t);

    /// <summary>Bytes of a tensor whose innermost dimension is <paramref name="ne0"/>; that dimension must be whole blocks.</summary>
    public static long ByteSize(GgmlType t, long ne0, long elements)
    {
        var (block, bytes) = Traits(t);
        if (ne0 % block != 0) throw new InvalidDataException($"{t}: a row of {ne0} elements is not a whole number of {block}-element blocks");
        return elements / block * bytes;
    }
}
