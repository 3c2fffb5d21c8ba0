using PeftSharp.Memory;

namespace PeftSharp.Memory.Tests;

public class PresetParameterCountTests
{
    // Published counts (model cards / safetensors metadata).
    [Theory]
    [InlineData("llama-2-7b", 6_738_415_616)]
    [InlineData("llama-2-13b", 13_015_864_320)]
    [InlineData("llama-2-70b", 68_976_648_192)]
    [InlineData("llama-3-8b", 8_030_261_248)]
    [InlineData("llama-3.1-70b", 70_553_706_496)]
    [InlineData("llama-3.2-1b", 1_235_814_400)]
    [InlineData("llama-3.2-3b", 3_212_749_824)]
    [InlineData("mistral-7b", 7_241_732_096)]
    [InlineData("qwen2.5-0.5b", 494_032_768)]
    [InlineData("qwen2.5-1.5b", 1_543_714_304)]
    [InlineData("qwen2.5-7b", 7_615_616_512)]
    [InlineData("tinyllama-1.1b", 1_100_048_384)]
    [InlineData("smollm2-135m", 134_515_008)]
    [InlineData("smollm2-360m", 361_821_120)]
    [InlineData("smollm2-1.7b", 1_711_376_384)]
    [InlineData("gemma-2-2b", 2_614_341_888)]
    [InlineData("phi-3-mini", 3_821_079_552)]
    [InlineData("gpt2", 124_439_808)]
    [InlineData("gpt2-medium", 354_823_168)]
    [InlineData("gpt2-large", 774_030_080)]
    [InlineData("gpt2-xl", 1_557_611_200)]
    public void Preset_has_the_published_parameter_count(string preset, long expected) =>
        Assert.Equal(expected, Presets.Shape(preset).TotalParameters);

    [Fact]
    public void Every_preset_is_covered_by_a_published_count()
    {
        var covered = typeof(PresetParameterCountTests).GetMethod(nameof(Preset_has_the_published_parameter_count))!
            .GetCustomAttributes(typeof(InlineDataAttribute), false).Cast<InlineDataAttribute>()
            .Select(a => (string)a.GetData(null!).First()[0]).ToHashSet();
        covered.Add("llama-3.1-8b"); // same shape as llama-3-8b
        var missing = Presets.Names.Where(n => !covered.Contains(n)).ToList();
        Assert.True(missing.Count == 0, "no published count for: " + string.Join(", ", missing));
    }

    [Fact]
    public void Llama_2_7b_matches_the_closed_form()
    {
        long h = 4096, i = 11008, v = 32000, layers = 32;
        long perLayer = 4 * h * h + 3 * h * i + 2 * h;
        Assert.Equal(2 * v * h + layers * perLayer + h, Presets.Shape("llama-2-7b").TotalParameters);
    }

    [Fact]
    public void Qwen2_has_biases_on_q_k_v_only()
    {
        var shape = Presets.Shape("qwen2.5-0.5b");
        var layer0 = shape.Modules.Where(m => m.Layer == 0 && m.Kind == ModuleKind.Linear).ToDictionary(m => m.Name.Split('.').Last(), m => m.Bias);
        Assert.True(layer0["q_proj"] && layer0["k_proj"] && layer0["v_proj"]);
        Assert.False(layer0["o_proj"] || layer0["gate_proj"] || layer0["up_proj"] || layer0["down_proj"]);
    }

    [Fact]
    public void Tied_head_owns_no_parameters()
    {
        var head = Presets.Shape("llama-3.2-1b").Modules.Single(m => m.Name == "lm_head");
        Assert.True(head.Tied);
        Assert.Equal(0, head.Parameters);
        Assert.Equal(128256, head.Out);
    }

    [Fact]
    public void Phi3_uses_fused_projections()
    {
        var names = Presets.Shape("phi-3-mini").Modules.Where(m => m.Layer == 0).Select(m => m.Name).ToList();
        Assert.Contains("model.layers.0.self_attn.qkv_proj", names);
        Assert.Contains("model.layers.0.mlp.gate_up_proj", names);
        Assert.DoesNotContain("model.layers.0.self_attn.q_proj", names);
    }

    [Fact]
    public void Unknown_preset_is_an_error_naming_the_model()
    {
        var e = Assert.Throws<PlanException>(() => Presets.Shape("llama-9-9b"));
        Assert.Equal("model", e.Field);
        Assert.Contains("llama-9-9b", e.Message);
    }
}
