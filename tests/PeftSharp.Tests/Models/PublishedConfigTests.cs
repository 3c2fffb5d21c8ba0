using ModelShape = PeftSharp.Memory.ModelShape;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>
/// Published configs give published parameter counts in `inspect` and `plan` (sources in
/// Fixtures/published-configs/SOURCE.md), and the planner's shape of every family agrees with the engine's
/// own parameters, name by name.
/// </summary>
[Collection("console")]
public class PublishedConfigTests
{
    static string Folder(string name) => Path.Combine(TestPaths.Fixtures, "published-configs", name);

    [Theory]
    [InlineData("qwen3-0.6b", 596_049_920)]         // transformers num_parameters() on Qwen/Qwen3-0.6B
    [InlineData("qwen3-8b", 8_190_735_360)]         // Hub safetensors total, Qwen/Qwen3-8B
    [InlineData("phi-3-mini-4k-instruct", 3_821_079_552)]   // Hub safetensors total
    [InlineData("phi-3.5-mini-instruct", 3_821_079_552)]    // Hub safetensors total
    [InlineData("phi-4-mini-instruct", 3_836_021_760)]      // Hub safetensors total
    [InlineData("gemma-2-2b", 2_614_341_888)]               // Hub safetensors total
    [InlineData("gemma-2-9b", 9_241_705_984)]               // Hub safetensors total
    public void Inspect_and_plan_print_the_published_count(string name, long published)
    {
        string dir = Folder(name);
        Assert.Equal(published, ModelShape.Load(dir).TotalParameters);
        ModelConfig.Load(dir);   // the engine reads it too
        string count = published.ToString("N0");

        var (code, stdout, stderr) = CliCapture.Run("inspect", "--model", dir);
        Assert.Contains(count, stdout);
        Assert.Equal(1, code);   // a config without weights: every tensor is missing, and it says so
        Assert.Contains("no model.safetensors", stderr);

        (code, stdout, stderr) = CliCapture.Run("plan", "--model", Path.Combine(dir, "config.json"), "--method", "lora");
        Assert.True(code == 0, stderr);
        Assert.Contains(count, stdout);
    }

    [Fact]
    public void Published_windows_and_rotary_read_as_transformers_does()
    {
        var phi4 = ModelConfig.Load(Folder("phi-4-mini-instruct"));
        Assert.Equal(96, phi4.RotaryDim);                       // 0.75 x head_dim 128
        Assert.True(phi4.TieWordEmbeddings);
        var phi3 = ModelConfig.Load(Folder("phi-3-mini-4k-instruct"));
        Assert.Equal(2047, phi3.WindowOf(0));                   // Phi-3: every layer
        var gemma = ModelConfig.Load(Folder("gemma-2-9b"));
        Assert.Equal(4096, gemma.WindowOf(0));
        Assert.Null(gemma.WindowOf(1));
        Assert.Equal(1 / 16.0, gemma.AttentionScale, 12);       // query_pre_attn_scalar 256
        Assert.Null(ModelConfig.Load(Folder("qwen3-8b")).WindowOf(35));   // use_sliding_window false
    }

    public static TheoryData<string> Families => new() { "llama", "qwen2", "qwen3", "phi3", "gemma2", "mistral" };

    [Theory]
    [MemberData(nameof(Families))]
    public void Planner_shape_equals_the_engine_parameters(string family)
    {
        var cfg = family switch
        {
            "qwen3" => RandomModel.Qwen3Config(tied: false),
            "phi3" => RandomModel.Phi3Config(longRope: true),
            "gemma2" => RandomModel.Gemma2Config(),
            _ => RandomModel.LlamaConfig(modelType: family),
        };
        string dir = RandomModel.Write(cfg);
        using var model = ModelLoader.Load(dir);
        var engine = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);
        var planned = CheckpointAudit.ExpectedTensors(ModelShape.Load(dir));
        Assert.Equal(engine.Keys.Order(), planned.Keys.Order());
        foreach (var (name, shape) in engine) Assert.Equal(planned[name], shape);
        Assert.Equal(model.ParameterCount(), ModelShape.Load(dir).TotalParameters);
    }

    [Theory]
    [InlineData("mistral", false)]
    [InlineData("phi3", false)]
    [InlineData("llama", true)]
    [InlineData("qwen3", true)]
    public void Attention_bias_applies_where_transformers_reads_it(string family, bool biased)
    {
        var cfg = family == "phi3" ? RandomModel.Phi3Config() : RandomModel.LlamaConfig(modelType: family);
        cfg["attention_bias"] = true;
        var c = ModelConfig.FromJson(cfg);
        Assert.Equal(biased, c.QkvBias);
        Assert.Equal(biased, c.OBias);
        var shape = PeftSharp.Memory.ModelShape.FromConfig(PeftSharp.Memory.ModelConfig.Parse(cfg.ToJsonString()));
        Assert.Equal(biased, shape.Modules.Any(m => m.Bias));
    }

    [Fact]
    public void Inspect_lists_missing_unexpected_and_misshaped_tensors_and_still_prints_the_table()
    {
        string dir = RandomModel.Write(RandomModel.Qwen3Config());
        var (code, stdout, stderr) = CliCapture.Run("inspect", "--model", dir);
        Assert.True(code == 0, stderr);
        Assert.Contains("model.layers.1.self_attn.k_norm.weight", stdout);

        var weights = RandomModel.Weights(RandomModel.Qwen3Config(), 1);
        weights.Remove("model.layers.1.self_attn.k_norm.weight");
        weights["model.layers.0.self_attn.q_proj.bias"] = zeros(64);
        weights["model.layers.0.mlp.up_proj.weight"] = zeros(48, 31);
        string broken = TestPaths.TempDir();
        File.Copy(Path.Combine(dir, "config.json"), Path.Combine(broken, "config.json"));
        PeftSharp.IO.SafeTensorsWriter.Write(Path.Combine(broken, "model.safetensors"), weights.Select(kv => (kv.Key, kv.Value)).ToList());
        (code, stdout, stderr) = CliCapture.Run("inspect", "--model", broken);
        Assert.Equal(1, code);
        Assert.Contains("model.layers.0.mlp.down_proj.weight", stdout);   // the table is still there
        Assert.Contains("1 tensor(s) the config implies are missing", stderr);
        Assert.Contains("model.layers.1.self_attn.k_norm.weight", stderr);
        Assert.Contains("model.layers.0.self_attn.q_proj.bias", stderr);
        Assert.Contains("model.layers.0.mlp.up_proj.weight [48, 31], config implies [48, 32]", stderr);
    }
}

/// <summary>Family fields with bad values: one line naming config.json and the field, non-zero exit.</summary>
[Collection("console")]
public class FamilyConfigErrorTests
{
    [Theory]
    [InlineData("layer_types", "layer_types has 1 entries for 2 layers")]
    [InlineData("long_factor", "short_factor/long_factor have 6/2 entries; rotary dim 12 needs 6")]
    [InlineData("hidden_act", "hidden_act 'relu' is not supported")]
    [InlineData("partial_rotary_factor", "partial_rotary_factor 0.1 gives 1 rotary dims")]
    public void Bad_family_field_is_one_clear_line(string field, string message)
    {
        var cfg = PeftSharp.Tests.Support.RandomModel.Phi3Config(longRope: true);
        switch (field)
        {
            case "layer_types": cfg["layer_types"] = new System.Text.Json.Nodes.JsonArray("full_attention"); break;
            case "long_factor": cfg["rope_scaling"]!["long_factor"] = new System.Text.Json.Nodes.JsonArray(1.0, 2.0); break;
            case "hidden_act": cfg["hidden_act"] = "relu"; break;
            default: cfg["partial_rotary_factor"] = 0.1; break;
        }
        string dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        var (code, _, err) = CliCapture.Run("inspect", "--model", dir);
        Assert.Equal(1, code);
        Assert.Contains(Path.Combine(dir, "config.json"), err);
        Assert.Contains(message, err);
        Assert.Single(err.Trim().Split('\n'));
    }
}
