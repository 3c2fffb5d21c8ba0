using System.Text;

namespace PeftSharp.IO.Gguf;

/// <summary>A tensor to write: its name, its shape in PyTorch order (outermost first), its ggml type and a writer of its bytes.</summary>
internal sealed record GgufTensor(string Name, long[] Shape, GgmlType Type, Action<Stream> WriteData)
{
    /// <summary>GGUF stores dimensions innermost first (ne[0] is the row length).</summary>
    public long[] GgufDims => Shape.Reverse().ToArray();
    public long Elements => Shape.Aggregate(1L, (a, b) => a * b);
    public long ByteSize => GgmlTypes.ByteSize(Type, Shape.Length == 0 ? 1 : Shape[^1], Elements);
}

/// <summary>
/// Writes a GGUF v3 file (ggml/docs/gguf.md): header, metadata, tensor infos, padding, then each tensor's data
/// aligned to general.alignment (32 unless the metadata says otherwise). Offsets follow from the sizes alone, so the
/// data is streamed tensor by tensor (peak memory about one tensor), into a temp file renamed over the destination
/// only when complete (<see cref="AtomicFile"/>).
/// </summary>
internal static class GgufWriter
{
    public const uint Magic = 0x46554747; // "GGUF" little-endian
    public const uint Version = 3;
    public const int DefaultAlignment = 32;

    public static void Write(string path, IReadOnlyList<KeyValuePair<string, GgufValue>> metadata, IReadOnlyList<GgufTensor> tensors)
    {
        var dupKey = metadata.GroupBy(m => m.Key).FirstOrDefault(g => g.Count() > 1);
        if (dupKey is not null) throw new ArgumentException($"GGUF metadata key '{dupKey.Key}' given twice");
        var dupTensor = tensors.GroupBy(t => t.Name).FirstOrDefault(g => g.Count() > 1);
        if (dupTensor is not null) throw new ArgumentException($"GGUF tensor '{dupTensor.Key}' given twice");
        int alignment = metadata.FirstOrDefault(m => m.Key == "general.alignment").Value is { } a ? checked((int)a.AsUInt64()) : DefaultAlignment;
        if (alignment <= 0 || alignment % 8 != 0) throw new ArgumentException($"general.alignment must be a positive multiple of 8, got {alignment}");

        AtomicFile.Write(path, fs =>
        {
            using var w = new BinaryWriter(fs, Encoding.UTF8, leaveOpen: true);
            w.Write(Magic);
            w.Write(Version);
            w.Write((ulong)tensors.Count);
            w.Write((ulong)metadata.Count);
            foreach (var (key, value) in metadata) { WriteString(w, key); WriteValue(w, value); }
            long offset = 0;
            foreach (var t in tensors)
            {
                WriteString(w, t.Name);
                w.Write((uint)t.Shape.Length);
                foreach (var d in t.GgufDims) w.Write((ulong)d);
                w.Write((uint)t.Type);
                w.Write((ulong)offset);
                offset = Align(offset + t.ByteSize, alignment);
            }
            w.Flush();
            Pad(fs, alignment);
            long dataStart = fs.Position;
            foreach (var t in tensors)
            {
                long begin = fs.Position;
                t.WriteData(fs);
                long written = fs.Position - begin;
                if (written != t.ByteSize) throw new InvalidOperationException($"GGUF tensor '{t.Name}': wrote {written} bytes, expected {t.ByteSize}");
                Pad(fs, alignment);
            }
            if (fs.Position - dataStart != offset) throw new InvalidOperationException("GGUF data section size differs from the tensor infos");
        });
    }

    public static long Align(long x, int alignment) => (x + alignment - 1) / alignment * alignment;

    static void Pad(Stream s, int alignment)
    {
        long pad = Align(s.Position, alignment) - s.Position;
        for (long i = 0; i < pad; i++) s.WriteByte(0);
    }

    static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    static void WriteValue(BinaryWriter w, GgufValue v)
    {
        w.Write((uint)v.Type);
        if (v.Type != GgufValueType.Array) { WriteScalar(w, v.Type, v.Value); return; }
        var items = (Array)v.Value;
        w.Write((uint)v.ElementType);
        w.Write((ulong)items.Length);
        foreach (var item in items) WriteScalar(w, v.ElementType, item!);
    }

    static void WriteScalar(BinaryWriter w, GgufValueType type, object value)
    {
        switch (type)
        {
            case GgufValueType.UInt8: w.Write(Convert.ToByte(value)); break;
            case GgufValueType.Int8: w.Write(Convert.ToSByte(value)); break;
            case GgufValueType.UInt16: w.Write(Convert.ToUInt16(value)); break;
            case GgufValueType.Int16: w.Write(Convert.ToInt16(value)); break;
            case GgufValueType.UInt32: w.Write(Convert.ToUInt32(value)); break;
            case GgufValueType.Int32: w.Write(Convert.ToInt32(value)); break;
            case GgufValueType.Float32: w.Write(Convert.ToSingle(value)); break;
            case GgufValueType.Bool: w.Write((byte)((bool)value ? 1 : 0)); break;
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.UInt64: w.Write(Convert.ToUInt64(value)); break;
            case GgufValueType.Int64: w.Write(Convert.ToInt64(value)); break;
            case GgufValueType.Float64: w.Write(Convert.ToDouble(value)); break;
            default: throw new ArgumentException($"GGUF value type {type} cannot be written as a scalar");
        }
    }
}
