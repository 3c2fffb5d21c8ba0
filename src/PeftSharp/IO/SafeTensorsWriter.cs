using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>One tensor to be written: its header fields and a callback that streams exactly ByteLength bytes.</summary>
internal sealed record SafeTensorEntry(string Name, string Dtype, long[] Shape, long ByteLength, Action<Stream> WriteData)
{
    /// <summary>
    /// An entry backed by a TorchSharp tensor (a parameter too: detached, moved to the CPU and made contiguous when
    /// written). Pass the tensor itself, not <c>t.detach()</c>: every wrapper made here is disposed here, where one
    /// made by the caller would be left to the finalizer (native memory held until a GC, and a finalizer racing the
    /// native call that still reads it).
    /// </summary>
    public static SafeTensorEntry FromTensor(string name, Tensor t)
    {
        long bytes = t.NumberOfElements * t.ElementSize;
        return new SafeTensorEntry(name, SafeTensorDtype.FromScalarType(t.dtype), t.shape, bytes, s =>
        {
            using var detached = t.detach();
            using var onCpu = detached.cpu();
            using var c = onCpu.contiguous();
            foreach (var view in TensorChunks.Rows(c))
                using (view) s.Write(view.bytes);
            GC.KeepAlive(t);
        });
    }

    public static SafeTensorEntry FromBytes(string name, string dtype, long[] shape, byte[] data) =>
        new(name, dtype, shape, data.LongLength, s => s.Write(data));
}

/// <summary>Writes safetensors files atomically (temp file + rename), streaming one tensor at a time.</summary>
internal static class SafeTensorsWriter
{
    public static void Write(string path, IEnumerable<SafeTensorEntry> entries, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = entries.ToList();
        var seen = new HashSet<string>();
        foreach (var e in list)
            if (!seen.Add(e.Name)) throw new ArgumentException($"duplicate tensor name '{e.Name}'");

        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var e in list)
            {
                w.WriteStartObject(e.Name);
                w.WriteString("dtype", e.Dtype);
                w.WriteStartArray("shape");
                foreach (var d in e.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + e.ByteLength);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += e.ByteLength;
            }
            w.WriteEndObject();
        }
        // Pad the header with spaces to 8-byte alignment, as the reference implementation does.
        var header = ms.ToArray().ToList();
        while (header.Count % 8 != 0) header.Add((byte)' ');

        AtomicFile.Write(path, fs =>
        {
            fs.Write(BitConverter.GetBytes((ulong)header.Count));
            fs.Write(header.ToArray());
            foreach (var e in list)
            {
                long before = fs.Position;
                e.WriteData(fs);
                if (fs.Position - before != e.ByteLength)
                    throw new InvalidOperationException($"tensor '{e.Name}' wrote {fs.Position - before} bytes, header says {e.ByteLength}");
            }
        });
    }

    public static void Write(string path, IEnumerable<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Write(path, tensors.Select(t => SafeTensorEntry.FromTensor(t.Name, t.Tensor)), metadata);
}
