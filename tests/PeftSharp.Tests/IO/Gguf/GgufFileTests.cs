using PeftSharp.IO.Gguf;
using PeftSharp.Tests.Support;

namespace PeftSharp.Tests.IO.Gguf;

/// <summary>
/// The GGUF writer and reader: every metadata type round-trips, offsets honour general.alignment, and a corrupt,
/// truncated or foreign file is one InvalidDataException naming the file and the cause. A failing write leaves no
/// file (and no temp file) behind.
/// </summary>
public class GgufFileTests
{
    static string Sample(string dir, int? alignment = null)
    {
        string path = Path.Combine(dir, "sample.gguf");
        var meta = new List<KeyValuePair<string, GgufValue>>
        {
            new("t.u8", new GgufValue(GgufValueType.UInt8, (byte)200)),
            new("t.i8", new GgufValue(GgufValueType.Int8, (sbyte)-5)),
            new("t.u16", new GgufValue(GgufValueType.UInt16, (ushort)60000)),
            new("t.i16", new GgufValue(GgufValueType.Int16, (short)-300)),
            new("t.u32", GgufValue.U32(4_000_000_000)),
            new("t.i32", GgufValue.I32(-7)),
            new("t.f32", GgufValue.F32(1.5f)),
            new("t.bool", GgufValue.Bool(true)),
            new("t.str", GgufValue.Str("héllo")),
            new("t.u64", GgufValue.U64(1UL << 40)),
            new("t.i64", new GgufValue(GgufValueType.Int64, -(1L << 40))),
            new("t.f64", new GgufValue(GgufValueType.Float64, Math.PI)),
            new("t.strings", GgufValue.Strings(["a", "Ġthe", ""])),
            new("t.ints", GgufValue.Int32s([1, -2, 3])),
        };
        if (alignment is int a) meta.Add(new("general.alignment", GgufValue.U32((uint)a)));
        float[] v = Enumerable.Range(0, 96).Select(i => i * 0.25f).ToArray();
        GgufWriter.Write(path, meta,
        [
            new GgufTensor("a", [3], GgmlType.F32, s => s.Write(GgmlQuants.Encode(GgmlType.F32, v.AsSpan(0, 3)))),
            new GgufTensor("b", [3, 32], GgmlType.Q8_0, s => s.Write(GgmlQuants.Encode(GgmlType.Q8_0, v))),
            new GgufTensor("c", [2, 5], GgmlType.F16, s => s.Write(GgmlQuants.Encode(GgmlType.F16, v.AsSpan(0, 10)))),
        ]);
        return path;
    }

    [Fact]
    public void MetadataOfEveryTypeAndTensorsRoundTrip()
    {
        using var r = new GgufReader(Sample(TestPaths.TempDir()));
        Assert.Equal(3u, r.Version);
        Assert.Equal((byte)200, r.Get("t.u8").Value);
        Assert.Equal((sbyte)-5, r.Get("t.i8").Value);
        Assert.Equal((ushort)60000, r.Get("t.u16").Value);
        Assert.Equal((short)-300, r.Get("t.i16").Value);
        Assert.Equal(4_000_000_000u, r.Get("t.u32").Value);
        Assert.Equal(-7, r.Get("t.i32").Value);
        Assert.Equal(1.5f, r.Get("t.f32").Value);
        Assert.Equal(true, r.Get("t.bool").Value);
        Assert.Equal("héllo", r.GetString("t.str"));
        Assert.Equal(1UL << 40, r.Get("t.u64").Value);
        Assert.Equal(-(1L << 40), r.Get("t.i64").Value);
        Assert.Equal(Math.PI, r.Get("t.f64").Value);
        Assert.Equal(new[] { "a", "Ġthe", "" }, (string[])r.Get("t.strings").Value);
        Assert.Equal(new[] { 1, -2, 3 }, (int[])r.Get("t.ints").Value);
        Assert.Equal(new long[] { 3, 32 }, r.Tensor("b").Shape);
        Assert.Equal(3 * 34, r.Tensor("b").ByteSize);
        Assert.All(r.Tensors, t => Assert.Equal(0, t.Offset % 32));
        Assert.Equal(new[] { 0f, 0.25f, 0.5f }, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(r.ReadBytes("a")).ToArray());
    }

    [Fact]
    public void GeneralAlignmentIsHonoured()
    {
        using var r = new GgufReader(Sample(TestPaths.TempDir(), alignment: 64));
        Assert.Equal(64, r.Alignment);
        Assert.All(r.Tensors, t => Assert.Equal(0, t.Offset % 64));
        Assert.Equal(new[] { 0f, 0.25f, 0.5f }, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(r.ReadBytes("a")).ToArray());
    }

    [Fact]
    public void EveryTruncationIsAClearErrorNamingTheFile()
    {
        string dir = TestPaths.TempDir();
        byte[] whole = File.ReadAllBytes(Sample(dir));
        string cut = Path.Combine(dir, "cut.gguf");
        // Every prefix that drops tensor data or header bytes (the last tensor ends before the file's final padding).
        for (int len = 0; len < whole.Length - 32; len += len < 600 ? 1 : 7)
        {
            File.WriteAllBytes(cut, whole[..len]);
            var e = Assert.Throws<InvalidDataException>(() => new GgufReader(cut).Dispose());
            Assert.StartsWith(cut + ":", e.Message);
            Assert.True(e.Message.Contains("truncated") || e.Message.Contains("not a GGUF file"), $"{len} bytes: {e.Message}");
        }
    }

    [Fact]
    public void CorruptFieldsAreClearErrors()
    {
        string dir = TestPaths.TempDir();
        string path = Sample(dir);
        byte[] good = File.ReadAllBytes(path);
        string bad = Path.Combine(dir, "bad.gguf");

        string Error(Action<byte[]> corrupt)
        {
            var b = (byte[])good.Clone();
            corrupt(b);
            File.WriteAllBytes(bad, b);
            return Assert.Throws<InvalidDataException>(() => new GgufReader(bad).Dispose()).Message;
        }

        Assert.Contains("not a GGUF file", Error(b => b[0] = (byte)'X'));
        Assert.Contains("version 9", Error(b => b[4] = 9));
        Assert.Contains("entry counts exceed", Error(b => BitConverter.GetBytes(ulong.MaxValue / 2).CopyTo(b, 8)));
        // The first key's value type (after magic, version, counts, key length and "t.u8").
        Assert.Contains("unknown value type 99", Error(b => BitConverter.GetBytes(99u).CopyTo(b, 24 + 8 + 4)));
        // Tensor "c" (the last info) gets ggml type 77: its type field sits 12 bytes before the end of the infos.
        int infosEnd = FindInfosEnd(good);
        Assert.Contains("ggml type 77", Error(b => BitConverter.GetBytes(77u).CopyTo(b, infosEnd - 12)));
        Assert.Contains("not aligned", Error(b => BitConverter.GetBytes(3UL).CopyTo(b, infosEnd - 8)));
        Assert.Contains(bad, Error(b => b[0] = 0));
    }

    /// <summary>End of the tensor infos: the reader's data start, less the padding (found from the real reader).</summary>
    static int FindInfosEnd(byte[] file)
    {
        // The last info ends with tensor "c"'s u32 type + u64 offset; its name precedes 4 + 2*8 dimension bytes.
        byte[] name = [1, 0, 0, 0, 0, 0, 0, 0, (byte)'c', 2, 0, 0, 0];
        int at = file.AsSpan().IndexOf(name);
        return at + name.Length + 2 * 8 + 12;
    }

    [Fact]
    public void FailedWriteLeavesNoFile()
    {
        string dir = TestPaths.TempDir();
        string path = Path.Combine(dir, "out.gguf");
        Assert.Throws<IOException>(() => GgufWriter.Write(path, [new("k", GgufValue.U32(1))],
            [new GgufTensor("a", [4], GgmlType.F32, s => { s.Write(new byte[8]); throw new IOException("disk full"); })]));
        Assert.Empty(Directory.GetFileSystemEntries(dir));
        // A tensor writer that writes the wrong number of bytes is caught too, before the file appears.
        var e = Assert.Throws<InvalidOperationException>(() => GgufWriter.Write(path, [], [new GgufTensor("a", [4], GgmlType.F32, s => s.Write(new byte[8]))]));
        Assert.Contains("'a'", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(dir));
    }
}
