using System.Text;
using PeftSharp.IO;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO;

public class SafeTensorsValidationTests
{
    static string WriteRaw(string header, int dataBytes, long? headerLenOverride = null)
    {
        var path = Path.Combine(TestPaths.TempDir(), "x.safetensors");
        var h = Encoding.UTF8.GetBytes(header);
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes((ulong)(headerLenOverride ?? h.Length)));
        fs.Write(h);
        fs.Write(new byte[dataBytes]);
        return path;
    }

    static string Fails(string path)
    {
        var e = Assert.ThrowsAny<Exception>(() => new SafeTensorsFile(path).Dispose());
        Assert.True(e is InvalidDataException or FileNotFoundException, e.GetType().Name);
        Assert.Contains(path, e.Message);
        return e.Message;
    }

    [Fact] public void MissingFile() => Fails("/nonexistent/model.safetensors");

    [Fact] public void OffsetsPastTheEnd() =>
        Assert.Contains("'w'", Fails(WriteRaw("""{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 8)));

    [Fact] public void OverlappingRanges() =>
        Assert.Contains("overlaps", Fails(WriteRaw("""{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""", 16)));

    [Fact] public void HugeHeaderLengthIsRefusedWithoutAllocating() =>
        Assert.Contains("header length", Fails(WriteRaw("{}", 0, headerLenOverride: long.MaxValue / 2)));

    [Fact] public void HeaderLongerThanFile() => Assert.Contains("past the end", Fails(WriteRaw("{}", 0, headerLenOverride: 4096)));

    [Fact] public void ShapeDisagreesWithOffsets() =>
        Assert.Contains("needs 16 bytes", Fails(WriteRaw("""{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8]}}""", 8)));

    [Fact] public void ImpossiblyLargeShape() =>
        Assert.Contains("impossibly large", Fails(WriteRaw("""{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}""", 8)));

    [Fact] public void NotJson() => Assert.Contains("JSON", Fails(WriteRaw("{not json", 0)));

    [Fact] public void TruncatedFile()
    {
        var dir = Support.RandomModel.Write(Support.RandomModel.LlamaConfig());
        var path = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 100)]);
        var e = Assert.Throws<InvalidDataException>(() => ModelLoader.Load(dir));
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void WrongShapeTensorIsNamed()
    {
        var cfg = Support.RandomModel.LlamaConfig();
        var dir = Support.RandomModel.Write(cfg);
        cfg["intermediate_size"] = 64; // checkpoint holds 48
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => ModelLoader.Load(dir));
        Assert.Contains("model.layers.0.mlp.gate_proj.weight", e.Message);
        Assert.Contains("[48, 32]", e.Message);
        Assert.Contains("[64, 32]", e.Message);
    }

    [Fact]
    public void UnsupportedModelType()
    {
        var cfg = Support.RandomModel.LlamaConfig();
        var dir = Support.RandomModel.Write(cfg);
        cfg["model_type"] = "mamba";
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => ModelLoader.Load(dir));
        Assert.Contains("mamba", e.Message);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void MissingTensorIsNamed()
    {
        var dir = TestPaths.TempDir();
        var cfg = Support.RandomModel.LlamaConfig();
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        var w = Support.RandomModel.Weights(cfg, 1);
        w.Remove("model.norm.weight");
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), w.Select(kv => (kv.Key, kv.Value)));
        Assert.Contains("model.norm.weight", Assert.Throws<InvalidDataException>(() => ModelLoader.Load(dir)).Message);
    }

    [Fact]
    public void RoundTripKeepsBytesAndMetadata()
    {
        var path = Path.Combine(TestPaths.TempDir(), "rt.safetensors");
        using var a = randn(3, 5);
        using var b = ScalarArgs.Arange(7, ScalarType.Int64, CPU);
        using var c = randn(4).to_type(ScalarType.BFloat16);
        SafeTensorsWriter.Write(path, [("a", a), ("b", b), ("c", c)], new Dictionary<string, string> { ["format"] = "pt" });
        using var f = new SafeTensorsFile(path);
        Assert.Equal("pt", f.Metadata["format"]);
        using var a2 = f.Load("a");
        using var b2 = f.Load("b");
        using var c2 = f.Load("c");
        Assert.True(a.equal(a2).all().item<bool>() && b.equal(b2).all().item<bool>() && c.equal(c2).all().item<bool>());
        Assert.Equal(0, (8 + BitConverter.ToInt64(File.ReadAllBytes(path), 0)) % 8); // header padded to 8 bytes
    }

    [Fact]
    public void FailedWriteLeavesPreviousFileIntact()
    {
        var path = Path.Combine(TestPaths.TempDir(), "keep.safetensors");
        using var a = randn(8);
        SafeTensorsWriter.Write(path, [("a", a)]);
        var before = File.ReadAllBytes(path);
        var failing = new SafeTensorEntry("boom", "F32", [4], 16, s => { s.Write(new byte[8]); throw new IOException("disk full"); });
        Assert.Throws<IOException>(() => SafeTensorsWriter.Write(path, [SafeTensorEntry.FromTensor("a", a), failing]));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Single(Directory.GetFiles(Path.GetDirectoryName(path)!)); // no temp file left behind
    }
}
