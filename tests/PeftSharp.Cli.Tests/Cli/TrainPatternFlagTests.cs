using System.Text.Json.Nodes;
using PeftSharp.Cli;
using PeftSharp.IO;

namespace PeftSharp.Tests.Cli;

/// <summary>train --rank-pattern / --alpha-pattern / --layers: PEFT's rank_pattern, alpha_pattern and layers_to_transform.</summary>
[Collection("console")]
public class TrainPatternFlagTests
{
    static string[] Train(string data, string outDir, params string[] extra) =>
        ["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", outDir, "--steps", "1", "--batch", "4", "--max-seq", "32", "--method", "lora", .. extra];

    [Fact]
    public void PatternsAndLayersReachTheAdapterAndItsConfigAsPeftWritesThem()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8), outDir = Path.Combine(dir, "out");
        var (code, _, err) = CliCapture.Run(Train(data, outDir, "--rank-pattern", @"q_proj=16,.*\.mlp\..*=4", "--alpha-pattern", "q_proj=32", "--layers", "1",
            "--targets", "q_proj,k_proj,gate_proj"));
        Assert.True(code == 0, err);
        string final = Path.Combine(outDir, "final");
        var cfg = JsonFile.ReadObject(Path.Combine(final, "adapter_config.json"));
        // PEFT writes the dicts with the regex keys verbatim and layers_to_transform as a list of ints.
        Assert.Equal("""{"q_proj":16,".*\\.mlp\\..*":4}""", cfg["rank_pattern"]!.ToJsonString());
        Assert.Equal("""{"q_proj":32}""", cfg["alpha_pattern"]!.ToJsonString());
        Assert.Equal("[1]", cfg["layers_to_transform"]!.ToJsonString());

        using var weights = new SafeTensorsFile(Path.Combine(final, "adapter_model.safetensors"));
        Assert.All(weights.Tensors, t => Assert.Contains(".layers.1.", t.Name));
        Assert.Equal(new long[] { 16, 64 }, weights.Info("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight").Shape);
        Assert.Equal(new long[] { 4, 64 }, weights.Info("base_model.model.model.layers.1.mlp.gate_proj.lora_A.weight").Shape);
        Assert.Equal(new long[] { 8, 64 }, weights.Info("base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight").Shape);
    }

    [Theory]
    [InlineData("--rank-pattern", "q_proj", "--rank-pattern: 'q_proj' is not KEY=VALUE")]
    [InlineData("--rank-pattern", "q_proj=0", "--rank-pattern 'q_proj' must be positive (got 0)")]
    [InlineData("--alpha-pattern", "(=2", "--alpha-pattern: key '(' is not a valid regex")]
    [InlineData("--layers", "3-1", "--layers: range '3-1' ends before it starts")]
    [InlineData("--layers", "1", "layers_to_transform: cannot be combined with a 'all-linear' target_modules")]
    public void BadValuesNameTheFlag(string flag, string value, string expected)
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8);
        var (code, stdout, stderr) = CliCapture.Run(Train(data, Path.Combine(dir, "out"), flag, value));
        Assert.NotEqual(0, code);
        Assert.Contains(expected, stdout + stderr);
        Assert.False(Directory.Exists(Path.Combine(dir, "out")));
    }
}
