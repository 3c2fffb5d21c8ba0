using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO;

/// <summary>Issue 16 item 7: NaN/Inf in adapters, adapter scalars, base weights and quantisation.</summary>
[Collection("console")]
public class NonFiniteTests
{
    /// <summary>Rewrites a safetensors file with <paramref name="value"/> at element 0 of tensor <paramref name="name"/> (the first when null); returns its name.</summary>
    internal static string Poison(string file, float value, string? name = null)
    {
        var tensors = new List<(string Name, Tensor Tensor)>();
        using (var f = new SafeTensorsFile(file))
            foreach (var info in f.Tensors.OrderBy(t => t.Name, StringComparer.Ordinal)) tensors.Add((info.Name, f.Load(info.Name)));
        name ??= tensors[0].Name;
        var target = tensors.Single(t => t.Name == name).Tensor;
        target.view(-1)[0] = value;
        SafeTensorsWriter.Write(file, tensors);
        foreach (var (_, t) in tensors) t.Dispose();
        return name;
    }

    static string CopyAdapter(string kind = "lora")
    {
        string dir = Path.Combine(TestPaths.TempDir(), kind);
        Tuners.PeftAdapterIOTests.CopyFixture(kind, dir);
        return dir;
    }

    internal static string CopyModel()
    {
        string dir = TestPaths.TempDir();
        foreach (var f in Directory.GetFiles(TestPaths.TinyLlama)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    public void AdapterWithANonFiniteWeightIsRefusedNamingTensorAndFile(float value)
    {
        string adapter = CopyAdapter();
        string weights = Path.Combine(adapter, AdapterFolderFiles.WeightsFile);
        string tensor = Poison(weights, value);
        string expected = $"{weights}: tensor '{tensor}' holds NaN or infinite values";

        // The library path serve and every command share, and two commands through the CLI.
        using (var model = ModelLoader.Load(TestPaths.TinyLlama))
        {
            Assert.Equal(expected, Assert.Throws<InvalidDataException>(() => PeftAdapterIO.Load(model, adapter)).Message);
            Assert.Empty(LoraModel.Of(model).Adapters);
        }
        var (code, _, stderr) = CliCapture.Run("generate", "--model", TestPaths.TinyLlama, "--adapter", adapter, "--prompt", "hi", "--max-new-tokens", "1");
        Assert.Equal(1, code);
        Assert.Equal($"error: {expected}", stderr.Trim());
        string merged = Path.Combine(TestPaths.TempDir(), "merged");
        (code, _, stderr) = CliCapture.Run("merge", "--model", TestPaths.TinyLlama, "--adapter", adapter, "--out", merged);
        Assert.Equal(1, code);
        Assert.Contains(expected, stderr);
        Assert.False(Directory.Exists(merged));
    }

    [Theory]
    [InlineData("1e308", "'lora_alpha' 1e+308 gives a scaling of 1.25e+307")]
    [InlineData("-1e300", "'lora_alpha' -1e+300 gives a scaling")]
    public void HugeLoraAlphaIsRefused(string alpha, string expected)
    {
        string adapter = CopyAdapter();
        string config = Path.Combine(adapter, AdapterFolderFiles.ConfigFile);
        var json = JsonFile.ReadObject(config);
        json["lora_alpha"] = JsonNode.Parse(alpha);
        json["r"] = 8;
        File.WriteAllText(config, json.ToJsonString());
        var (code, _, stderr) = CliCapture.Run("generate", "--model", TestPaths.TinyLlama, "--adapter", adapter, "--prompt", "hi", "--max-new-tokens", "1");
        Assert.Equal(1, code);
        Assert.True(stderr.StartsWith($"error: {config}: {expected}", StringComparison.Ordinal), stderr);
    }

    [Theory]
    [InlineData("NaN")]
    [InlineData("Infinity")]
    [InlineData("-Infinity")]
    public void NonFiniteAdapterWeightFlagIsRefused(string weight)
    {
        string adapter = CopyAdapter();
        var (code, _, stderr) = CliCapture.Run("generate", "--model", TestPaths.TinyLlama, "--adapter", $"{adapter}:{weight}", "--prompt", "hi", "--max-new-tokens", "1");
        Assert.Equal(1, code);
        Assert.StartsWith($"error: --adapter '{adapter}:{weight}': the weight must be a finite number", stderr);
    }

    [Fact]
    public void NonFiniteBaseWeightsWarnOnceNamingTheTensor()
    {
        string model = CopyModel();
        Poison(Path.Combine(model, "model.safetensors"), float.NaN, "model.layers.0.self_attn.q_proj.weight");
        Poison(Path.Combine(model, "model.safetensors"), float.PositiveInfinity, "model.layers.1.mlp.up_proj.weight");
        using (var warnings = new CapturedWarnings())
        {
            ModelLoader.Load(model).Dispose();
            var w = Assert.Single(warnings.Messages);
            Assert.Contains("2 weight tensor(s) hold NaN or infinite values (model.layers.0.self_attn.q_proj.weight, model.layers.1.mlp.up_proj.weight)", w);
        }
        using (var warnings = new CapturedWarnings())
        {
            ModelLoader.Load(TestPaths.TinyLlama).Dispose();
            Assert.Empty(warnings.Messages);
        }
    }

    [Fact]
    public void QuantizeOfANaNWeightFailsNamingItAndLeavesNoOutput()
    {
        string model = CopyModel();
        string weights = Path.Combine(model, "model.safetensors");
        Poison(weights, float.NaN, "model.layers.1.self_attn.o_proj.weight");
        string parent = TestPaths.TempDir(), output = Path.Combine(parent, "nf4");
        var (code, _, stderr) = CliCapture.Run("quantize", "--model", model, "--out", output);
        Assert.Equal(1, code);
        Assert.Equal($"error: {weights}: tensor 'model.layers.1.self_attn.o_proj.weight' holds NaN or infinite values", stderr.Trim());
        Assert.Empty(Directory.GetFileSystemEntries(parent)); // no output folder, no temp folder
    }
}
