using System.Text.Json.Nodes;
using PeftSharp.Cli;
using PeftSharp.IO;
using PeftSharp.Cli.Commands;
using PeftSharp.Models;

namespace PeftSharp.Tests.Quantization;

[Collection("console")]   // it runs the CLI, which writes to the process-wide console other tests capture
public class QuantizeCliTests
{
    [Fact]
    public void QuantizeWritesALoadableFolderAndInspectDescribesIt()
    {
        string outDir = Path.Combine(TestPaths.TempDir(), "q");
        Assert.Equal(0, CliApp.Run(["quantize", "--model", TestPaths.TinyLlama, "--out", outDir, "--block-size", "32"]));
        using (var m = ModelLoader.Load(outDir)) Assert.Equal("nf4-b32-dq", m.QuantizationScheme);
        var lines = InspectExtensions.Describe(outDir).ToList();
        Assert.Contains(lines, l => l.Key == "quantisation" && l.Value.StartsWith("nf4-b32-dq: 14 tensors"));
        Assert.Equal(0, CliApp.Run(["inspect", "--model", outDir]));
        Assert.DoesNotContain(Directory.GetDirectories(Path.GetDirectoryName(outDir)!), d => d.EndsWith(".tmp"));
    }

    [Theory]
    [InlineData("--block-size", "48")]
    [InlineData("--block-size", "4096")] // does not divide [64, 176]
    public void BadBlockSizesExitOneAndWriteNothing(string flag, string value)
    {
        string outDir = Path.Combine(TestPaths.TempDir(), "q");
        Assert.Equal(1, CliApp.Run(["quantize", "--model", TestPaths.TinyLlama, "--out", outDir, flag, value]));
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void QuantisingAQuantisedFolderIsRefused()
    {
        string q = QuantizedModelTests.QuantizedTiny();
        Assert.Equal(1, CliApp.Run(["quantize", "--model", q, "--out", Path.Combine(TestPaths.TempDir(), "qq")]));
    }

    /// <summary>The tiny base with its config's dtype written as <paramref name="keys"/> say (transformers 4.56+ writes "dtype").</summary>
    static string TinyWithDtype(params (string Key, string Value)[] keys)
    {
        string dir = Directory.CreateDirectory(Path.Combine(TestPaths.TempDir(), "base")).FullName;
        foreach (var f in Directory.GetFiles(TestPaths.TinyLlama)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var config = JsonFile.ReadObject(Path.Combine(dir, "config.json"));
        config.Remove("torch_dtype");
        foreach (var (k, v) in keys) config[k] = v;
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        return dir;
    }

    /// <summary>bnb_4bit_compute_dtype comes from the config's dtype whichever way it is spelled; "dtype" wins over
    /// "torch_dtype" when both are there, as transformers' PreTrainedConfig reads them.</summary>
    [Theory]
    [InlineData("dtype", "bfloat16", null, null, "bfloat16")]
    [InlineData("torch_dtype", "float16", null, null, "float16")]
    [InlineData("dtype", "bfloat16", "torch_dtype", "float16", "bfloat16")]
    public void QuantizeTakesTheComputeDtypeFromEitherSpelling(string key, string value, string? key2, string? value2, string expected)
    {
        string model = key2 is null ? TinyWithDtype((key, value)) : TinyWithDtype((key, value), (key2, value2!));
        Assert.Equal(expected, ModelConfig.Load(model).TorchDtype);
        string outDir = Path.Combine(TestPaths.TempDir(), "q");
        Assert.Equal(0, CliApp.Run(["quantize", "--model", model, "--out", outDir]));
        var written = JsonFile.ReadObject(Path.Combine(outDir, "config.json"));
        Assert.Equal(expected, written["quantization_config"]!["bnb_4bit_compute_dtype"]!.GetValue<string>());
    }

    [Fact]
    public void ADtypeThatIsNoStringIsNamed()
    {
        string model = TinyWithDtype();
        var config = JsonFile.ReadObject(Path.Combine(model, "config.json"));
        config["dtype"] = 16;
        File.WriteAllText(Path.Combine(model, "config.json"), config.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => ModelConfig.Load(model));
        Assert.Equal($"{Path.Combine(model, "config.json")}: 'dtype' must be a string such as \"bfloat16\", got 16", e.Message);
    }
}
