using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>One tensor's entry in a safetensors header. Offsets are absolute within the file.</summary>
internal sealed record SafeTensorInfo(string Name, string Dtype, long[] Shape, long Begin, long End)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => checked(a * b));
    public long ByteLength => End - Begin;
}

/// <summary>
/// Streaming, memory-mapped safetensors reader. The header is validated before anything is trusted:
/// its length, every offset, every size (= product of the shape times the element size) and that no two
/// tensors overlap. Tensors are read one at a time, so a caller (the NF4 quantiser) never needs the whole model in
/// memory. <see cref="Load"/> reads with positional file reads rather than through the mapping: touched mapped pages
/// count in the process's resident set until the file is closed, which would make loading peak at twice the model.
/// </summary>
internal sealed unsafe class SafeTensorsFile : IDisposable
{
    /// <summary>Headers above this are refused: real ones are kilobytes, a lying one could ask for gigabytes.</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    readonly MemoryMappedFile? _map;
    readonly Microsoft.Win32.SafeHandles.SafeFileHandle _handle;
    readonly MemoryMappedViewAccessor? _view;
    readonly byte* _base;
    readonly Dictionary<string, SafeTensorInfo> _tensors;

    public string Path { get; }
    public long FileLength { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public IReadOnlyCollection<SafeTensorInfo> Tensors => _tensors.Values;

    public SafeTensorsFile(string path)
    {
        Path = path;
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: file not found", path);
        // The length of the file the path leads to: in the Hugging Face cache a snapshot's files are symlinks into
        // blobs/, and FileInfo.Length would give the link's own length.
        FileLength = LinkedFile.Length(path);
        if (FileLength < 8) throw Bad("file is shorter than the 8-byte header length");
        using (var fs = File.OpenRead(path))
        {
            Span<byte> lenBytes = stackalloc byte[8];
            fs.ReadExactly(lenBytes);
            ulong headerLen = BitConverter.ToUInt64(lenBytes);
            if (headerLen > (ulong)MaxHeaderBytes) throw Bad($"header length {headerLen} exceeds the {MaxHeaderBytes}-byte limit");
            if (8 + (long)headerLen > FileLength) throw Bad($"header length {headerLen} runs past the end of the file ({FileLength} bytes)");
            var header = new byte[headerLen];
            fs.ReadExactly(header);
            (_tensors, Metadata) = ParseHeader(header, 8 + (long)headerLen);
        }
        _handle = File.OpenHandle(path);
        if (FileLength > 0)
        {
            _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* p = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _base = p + _view.PointerOffset;
        }
    }

    InvalidDataException Bad(string why, string? tensor = null) =>
        new($"{Path}: {(tensor is null ? "" : $"tensor '{tensor}': ")}{why}");

    (Dictionary<string, SafeTensorInfo>, Dictionary<string, string>) ParseHeader(byte[] header, long dataStart)
    {
        // JsonDocument accepts invalid UTF-8 inside strings and fails later, reading a name; refuse it up front.
        if (!System.Text.Unicode.Utf8.IsValid(header)) throw Bad("header is not valid UTF-8");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header); }
        catch (JsonException e) { throw Bad($"header is not valid JSON ({e.Message})"); }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad("header is not a JSON object");
        long dataLen = FileLength - dataStart;
        var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        var meta = new Dictionary<string, string>();
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "__metadata__")
            {
                if (prop.Value.ValueKind == JsonValueKind.Object)
                    foreach (var m in prop.Value.EnumerateObject()) meta[m.Name] = m.Value.ToString();
                continue;
            }
            var e = prop.Value;
            if (e.ValueKind != JsonValueKind.Object
                || !e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String
                || !e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array
                || !e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
                throw Bad("entry needs dtype, shape and data_offsets [begin, end]", prop.Name);
            string dtype = dt.GetString()!;
            int elemSize;
            try { elemSize = SafeTensorDtype.ElementSize(dtype); }
            catch (InvalidDataException ex) { throw Bad(ex.Message, prop.Name); }
            var shape = new long[sh.GetArrayLength()];
            int i = 0;
            foreach (var d in sh.EnumerateArray())
            {
                if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0) throw Bad($"bad dimension {d}", prop.Name);
                shape[i++] = v;
            }
            if (!off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end) || begin < 0 || end < begin)
                throw Bad($"bad data_offsets {off}", prop.Name);
            if (end > dataLen) throw Bad($"data_offsets [{begin}, {end}] run past the end of the data ({dataLen} bytes); the file is truncated or the header lies", prop.Name);
            long expected;
            try { expected = checked(shape.Aggregate(1L, (a, b) => checked(a * b)) * elemSize); }
            catch (OverflowException) { throw Bad($"shape [{string.Join(", ", shape)}] is impossibly large", prop.Name); }
            if (expected != end - begin)
                throw Bad($"shape [{string.Join(", ", shape)}] of {dtype} needs {expected} bytes but data_offsets span {end - begin}", prop.Name);
            tensors[prop.Name] = new SafeTensorInfo(prop.Name, dtype, shape, dataStart + begin, dataStart + end);
        }
        var sorted = tensors.Values.Where(t => t.ByteLength > 0).OrderBy(t => t.Begin).ToList();
        for (int k = 1; k < sorted.Count; k++)
            if (sorted[k].Begin < sorted[k - 1].End)
                throw Bad($"data overlaps tensor '{sorted[k - 1].Name}'", sorted[k].Name);
        return (tensors, meta);
    }

    public bool Contains(string name) => _tensors.ContainsKey(name);

    public SafeTensorInfo Info(string name) =>
        _tensors.TryGetValue(name, out var i) ? i : throw new KeyNotFoundException($"{Path}: no tensor named '{name}'");

    /// <summary>The raw little-endian bytes of a tensor, straight from the mapping (no copy).</summary>
    public ReadOnlySpan<byte> RawBytes(string name)
    {
        var info = Info(name);
        if (info.ByteLength > int.MaxValue) throw new NotSupportedException($"{Path}: tensor '{name}' is over 2 GiB; use CopyInto");
        return new ReadOnlySpan<byte>(_base + info.Begin, (int)info.ByteLength);
    }

    /// <summary>
    /// Loads one tensor as a new TorchSharp tensor of <paramref name="dtype"/> (null: the stored dtype) on
    /// <paramref name="device"/>. Only this tensor is materialised; large tensors are copied in row chunks.
    /// </summary>
    public Tensor Load(string name, ScalarType? dtype = null, Device? device = null)
    {
        var info = Info(name);
        var stored = SafeTensorDtype.ToScalarType(info.Dtype);
        using var scope = NewDisposeScope();
        var raw = empty(info.Shape, stored);
        CopyInto(info, raw);
        var result = raw;
        if (dtype is { } d && d != stored) result = result.to_type(d);
        if (device is not null && device.type != DeviceType.CPU) result = result.to(device);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Streams one tensor's raw bytes into <paramref name="destination"/> with 1 MiB positional reads, like
    /// <see cref="Load"/> not through the mapping, so neither the tensor nor its mapped pages stay resident.
    /// </summary>
    public void CopyTo(string name, Stream destination)
    {
        var info = Info(name);
        var buf = new byte[1 << 20];
        for (long done = 0; done < info.ByteLength;)
        {
            int n = (int)Math.Min(buf.Length, info.ByteLength - done);
            ReadAt(info.Begin + done, buf.AsSpan(0, n));
            destination.Write(buf, 0, n);
            done += n;
        }
    }

    void CopyInto(SafeTensorInfo info, Tensor dst)
    {
        long offset = info.Begin;
        foreach (var view in TensorChunks.Rows(dst))
            using (view)
            {
                var span = view.bytes;
                ReadAt(offset, span);
                offset += span.Length;
            }
    }

    void ReadAt(long offset, Span<byte> dst)
    {
        while (dst.Length > 0)
        {
            int n = RandomAccess.Read(_handle, dst, offset);
            if (n <= 0) throw Bad($"file ended at byte {offset} while reading tensor data");
            dst = dst[n..];
            offset += n;
        }
    }

    public void Dispose()
    {
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map?.Dispose();
        _handle.Dispose();
    }
}
