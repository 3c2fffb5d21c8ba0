using System.Text;
using PeftSharp.IO;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

public class BadCheckpointTests
{
    const string W = "model.layers.1.mlp.down_proj.weight";

    /// <summary>A copy of a quantised tiny folder whose tensors went through <paramref name="edit"/>.</summary>
    static string Tampered(Func<List<SafeTensorEntry>, List<SafeTensorEntry>> edit)
    {
        string src = QuantizedModelTests.QuantizedTiny();
        string dir = TestPaths.TempDir();
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        List<SafeTensorEntry> entries;
        using (var st = new SafeTensorsFile(Path.Combine(src, "model.safetensors")))
            entries = st.Tensors.OrderBy(t => t.Begin).Select(t => SafeTensorEntry.FromBytes(t.Name, t.Dtype, t.Shape, st.RawBytes(t.Name).ToArray())).ToList();
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), edit(entries));
        return dir;
    }

    static string LoadError(string dir) => Assert.Throws<InvalidDataException>(() => ModelLoader.Load(dir).Dispose()).Message;

    [Fact]
    public void MissingAbsmaxNamesTheTensor()
    {
        var msg = LoadError(Tampered(e => e.Where(x => x.Name != W + ".absmax").ToList()));
        Assert.Contains($"'{W}'", msg);
        Assert.Contains("missing", msg);
    }

    [Fact]
    public void MissingQuantStateNamesTheTensor()
    {
        var msg = LoadError(Tampered(e => e.Where(x => !x.Name.StartsWith(W + ".quant_state")).ToList()));
        Assert.Contains($"'{W}'", msg);
        Assert.Contains("quant_state", msg);
    }

    [Fact]
    public void InconsistentNestedAbsmaxNamesTheTensor()
    {
        var msg = LoadError(Tampered(e => e.Select(x => x.Name == W + ".nested_absmax" ? SafeTensorEntry.FromBytes(x.Name, "F32", [2], new byte[8]) : x).ToList()));
        Assert.Contains($"'{W}'", msg);
        Assert.Contains("nested_absmax", msg);
    }

    [Fact]
    public void QuantStateLyingAboutTheShapeNamesTheTensor()
    {
        var msg = LoadError(Tampered(e => e.Select(x =>
        {
            if (x.Name != W + ".quant_state.bitsandbytes__nf4") return x;
            using var ms = new MemoryStream();
            x.WriteData(ms);
            var json = Encoding.UTF8.GetString(ms.ToArray()).Replace("[64, 176]", "[176, 64]");
            return SafeTensorEntry.FromBytes(x.Name, "U8", [json.Length], Encoding.UTF8.GetBytes(json));
        }).ToList()));
        Assert.Contains($"'{W}'", msg);
        Assert.Contains("quant_state says shape [176, 64]", msg);
    }

    [Fact]
    public void MalformedQuantStateJsonIsAClearError()
    {
        var msg = LoadError(Tampered(e => e.Select(x => x.Name == W + ".quant_state.bitsandbytes__nf4"
            ? SafeTensorEntry.FromBytes(x.Name, "U8", [5], Encoding.UTF8.GetBytes("{oops")) : x).ToList()));
        Assert.Contains(W, msg);
        Assert.Contains("not valid JSON", msg);
    }
}
