namespace PeftSharp.IO.Gguf;

/// <summary>
/// One metadata value: a scalar, a string, or an array of one element type (arrays of arrays are not needed by
/// llama.cpp's keys and are not written). <see cref="Value"/> holds the CLR value (an array for arrays).
/// </summary>
internal sealed record GgufValue(GgufValueType Type, object Value, GgufValueType ElementType = GgufValueType.UInt8)
{
    public static GgufValue U32(uint v) => new(GgufValueType.UInt32, v);
    public static GgufValue I32(int v) => new(GgufValueType.Int32, v);
    public static GgufValue U64(ulong v) => new(GgufValueType.UInt64, v);
    public static GgufValue F32(float v) => new(GgufValueType.Float32, v);
    public static GgufValue Bool(bool v) => new(GgufValueType.Bool, v);
    public static GgufValue Str(string v) => new(GgufValueType.String, v);
    public static GgufValue Strings(IReadOnlyList<string> v) => new(GgufValueType.Array, v.ToArray(), GgufValueType.String);
    public static GgufValue Int32s(IReadOnlyList<int> v) => new(GgufValueType.Array, v.ToArray(), GgufValueType.Int32);
    public static GgufValue Float32s(IReadOnlyList<float> v) => new(GgufValueType.Array, v.ToArray(), GgufValueType.Float32);

    public string AsString() => Value as string ?? throw new InvalidDataException($"expected a string, found {Type}");
    public ulong AsUInt64() => Value switch
    {
        byte b => b, ushort s => s, uint u => u, ulong l => l,
        sbyte sb when sb >= 0 => (ulong)sb, short sh when sh >= 0 => (ulong)sh, int i when i >= 0 => (ulong)i, long l2 when l2 >= 0 => (ulong)l2,
        _ => throw new InvalidDataException($"expected a non-negative integer, found {Type}"),
    };
    public double AsDouble() => Value switch { float f => f, double d => d, _ => AsUInt64() };
}
