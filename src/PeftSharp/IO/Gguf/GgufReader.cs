using System.Text;

namespace PeftSharp.IO.Gguf;

/// <summary>A tensor's entry in a GGUF file: shape in PyTorch order, type, and absolute byte range in the file.</summary>
internal sealed record GgufTensorInfo(string Name, long[] Shape, GgmlType Type, long Offset, long ByteSize);

/// <summary>
/// Reads a GGUF v3 file's metadata and tensor infos, and a tensor's bytes on request. Every count, length and offset
/// is checked against the file's size before it is used, so a corrupt, truncated or foreign file is one
/// <see cref="InvalidDataException"/> that names the file and the cause, never a huge allocation or a crash.
/// </summary>
internal sealed class GgufReader : IDisposable
{
    // Far above any real key, token or tensor name; a larger length means a corrupt file.
    const long MaxStringBytes = 1 << 24;
    const int MaxDims = 4; // GGML_MAX_DIMS

    readonly FileStream _fs;
    readonly BinaryReader _r;

    public string Path { get; }
    public uint Version { get; }
    public IReadOnlyDictionary<string, GgufValue> Metadata { get; }
    public IReadOnlyList<GgufTensorInfo> Tensors { get; }
    public int Alignment { get; }

    public GgufReader(string path)
    {
        Path = path;
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: GGUF file not found", path);
        _fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        _r = new BinaryReader(_fs, Encoding.UTF8, leaveOpen: true);
        try
        {
            Need(8, "header");
            uint magic = _r.ReadUInt32();
            if (magic != GgufWriter.Magic) throw Bad("not a GGUF file (wrong magic bytes)");
            Version = _r.ReadUInt32();
            if (Version is < 2 or > 3) throw Bad($"GGUF version {Version} is not supported (2 and 3 are)");
            Need(16, "header");
            ulong tensorCount = _r.ReadUInt64(), kvCount = _r.ReadUInt64();
            // Each entry takes at least 8 bytes in the file: a count beyond that is corrupt, whatever it claims.
            if (tensorCount > (ulong)_fs.Length / 8 || kvCount > (ulong)_fs.Length / 8) throw Bad("truncated or corrupt (entry counts exceed the file size)");
            var meta = new Dictionary<string, GgufValue>(StringComparer.Ordinal);
            for (ulong i = 0; i < kvCount; i++)
            {
                string key = ReadString("metadata key");
                if (!meta.TryAdd(key, ReadValue(key))) throw Bad($"metadata key '{key}' appears twice");
            }
            Metadata = meta;
            Alignment = meta.TryGetValue("general.alignment", out var a) ? checked((int)a.AsUInt64()) : GgufWriter.DefaultAlignment;
            if (Alignment <= 0 || (Alignment & (Alignment - 1)) != 0) throw Bad($"general.alignment {Alignment} is not a power of two");
            var raw = new List<(string Name, long[] Shape, uint Type, ulong Offset)>();
            for (ulong i = 0; i < tensorCount; i++)
            {
                string name = ReadString("tensor name");
                Need(4, $"tensor '{name}'");
                uint nDims = _r.ReadUInt32();
                if (nDims > MaxDims) throw Bad($"tensor '{name}' has {nDims} dimensions (at most {MaxDims})");
                Need(8 * nDims + 12, $"tensor '{name}'");
                var dims = new long[nDims];
                for (int d = 0; d < nDims; d++)
                {
                    ulong n = _r.ReadUInt64();
                    if (n == 0 || n > (1UL << 40)) throw Bad($"tensor '{name}' has an impossible dimension {n}");
                    dims[d] = (long)n;
                }
                uint type = _r.ReadUInt32();
                ulong offset = _r.ReadUInt64();
                raw.Add((name, dims.Reverse().ToArray(), type, offset));
            }
            long dataStart = GgufWriter.Align(_fs.Position, Alignment);
            var infos = new List<GgufTensorInfo>();
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (name, shape, type, offset) in raw)
            {
                if (!names.Add(name)) throw Bad($"tensor '{name}' appears twice");
                if (!GgmlTypes.IsKnown(type)) throw Bad($"tensor '{name}' has ggml type {type}{(GgufDequant.IsNamed(type) ? $" ({GgufDequant.TypeName(type)})" : "")}, which PeftSharp does not read (supported: {GgufDequant.Supported})");
                var t = (GgmlType)type;
                long elements;
                try { elements = shape.Aggregate(1L, (x, y) => checked(x * y)); }
                catch (OverflowException) { throw Bad($"tensor '{name}' has impossible dimensions [{string.Join(", ", shape)}]"); }
                long size;
                try { size = GgmlTypes.ByteSize(t, shape.Length == 0 ? 1 : shape[^1], elements); }
                catch (InvalidDataException e) { throw Bad($"tensor '{name}': {e.Message}"); }
                if (offset % (ulong)Alignment != 0) throw Bad($"tensor '{name}' data offset {offset} is not aligned to {Alignment}");
                if (offset > (ulong)_fs.Length || dataStart + (long)offset + size > _fs.Length)
                    throw Bad($"truncated: tensor '{name}' needs bytes up to {dataStart + (long)offset + size:N0} but the file has {_fs.Length:N0}");
                infos.Add(new GgufTensorInfo(name, shape, t, dataStart + (long)offset, size));
            }
            Tensors = infos;
        }
        catch (EndOfStreamException) { Dispose(); throw Bad("truncated (the file ends inside its header)"); }
        catch { Dispose(); throw; }
    }

    public GgufTensorInfo Tensor(string name) =>
        Tensors.FirstOrDefault(t => t.Name == name) ?? throw Bad($"has no tensor '{name}'");

    /// <summary>The raw bytes of one tensor, as stored (quantised blocks for quantised types).</summary>
    public byte[] ReadBytes(string name)
    {
        var t = Tensor(name);
        var bytes = new byte[t.ByteSize];
        _fs.Position = t.Offset;
        _fs.ReadExactly(bytes);
        return bytes;
    }

    public string GetString(string key) => Get(key).AsString();
    public ulong GetUInt(string key) => Get(key).AsUInt64();
    public GgufValue Get(string key) => Metadata.TryGetValue(key, out var v) ? v : throw Bad($"has no metadata key '{key}'");

    InvalidDataException Bad(string cause) => new($"{Path}: {cause}");

    void Need(long bytes, string what)
    {
        if (_fs.Position + bytes > _fs.Length) throw Bad($"truncated (the file ends inside the {what})");
    }

    string ReadString(string what)
    {
        Need(8, what);
        ulong len = _r.ReadUInt64();
        if (len > MaxStringBytes) throw Bad($"corrupt: a {what} claims {len:N0} bytes");
        Need((long)len, what);
        var bytes = _r.ReadBytes((int)len);
        try { return new UTF8Encoding(false, true).GetString(bytes); }
        catch (DecoderFallbackException) { throw Bad($"corrupt: a {what} is not valid UTF-8"); }
    }

    GgufValue ReadValue(string key)
    {
        Need(4, $"value of '{key}'");
        uint type = _r.ReadUInt32();
        if (!Enum.IsDefined(typeof(GgufValueType), type)) throw Bad($"metadata key '{key}' has unknown value type {type}");
        var t = (GgufValueType)type;
        if (t != GgufValueType.Array) return new GgufValue(t, ReadScalar(t, key));
        Need(12, $"array '{key}'");
        uint elemType = _r.ReadUInt32();
        if (!Enum.IsDefined(typeof(GgufValueType), elemType) || elemType == (uint)GgufValueType.Array)
            throw Bad($"metadata array '{key}' has unsupported element type {elemType}");
        ulong count = _r.ReadUInt64();
        var et = (GgufValueType)elemType;
        long minBytes = et == GgufValueType.String ? 8 : ScalarBytes(et);
        if (count > (ulong)(_fs.Length - _fs.Position) / (ulong)minBytes) throw Bad($"truncated or corrupt: array '{key}' claims {count:N0} elements");
        var items = Array.CreateInstance(ClrType(et), (long)count);
        for (long i = 0; i < (long)count; i++) items.SetValue(ReadScalar(et, key), i);
        return new GgufValue(t, items, et);
    }

    static int ScalarBytes(GgufValueType t) => t switch
    {
        GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
        GgufValueType.UInt16 or GgufValueType.Int16 => 2,
        GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
        _ => 8,
    };

    static Type ClrType(GgufValueType t) => t switch
    {
        GgufValueType.UInt8 => typeof(byte), GgufValueType.Int8 => typeof(sbyte), GgufValueType.UInt16 => typeof(ushort),
        GgufValueType.Int16 => typeof(short), GgufValueType.UInt32 => typeof(uint), GgufValueType.Int32 => typeof(int),
        GgufValueType.Float32 => typeof(float), GgufValueType.Bool => typeof(bool), GgufValueType.String => typeof(string),
        GgufValueType.UInt64 => typeof(ulong), GgufValueType.Int64 => typeof(long), _ => typeof(double),
    };

    object ReadScalar(GgufValueType t, string key)
    {
        if (t == GgufValueType.String) return ReadString($"string value of '{key}'");
        Need(ScalarBytes(t), $"value of '{key}'");
        return t switch
        {
            GgufValueType.UInt8 => _r.ReadByte(), GgufValueType.Int8 => _r.ReadSByte(),
            GgufValueType.UInt16 => _r.ReadUInt16(), GgufValueType.Int16 => _r.ReadInt16(),
            GgufValueType.UInt32 => _r.ReadUInt32(), GgufValueType.Int32 => _r.ReadInt32(),
            GgufValueType.Float32 => _r.ReadSingle(),
            GgufValueType.Bool => _r.ReadByte() switch { 0 => false, 1 => true, var b => throw Bad($"metadata key '{key}': bool byte {b}") },
            GgufValueType.UInt64 => _r.ReadUInt64(), GgufValueType.Int64 => _r.ReadInt64(),
            _ => _r.ReadDouble(),
        };
    }

    public void Dispose()
    {
        _r.Dispose();
        _fs.Dispose();
    }
}
