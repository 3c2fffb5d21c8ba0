using PeftSharp.Memory;

namespace PeftSharp.Memory.Tests;

public class TargetMatcherTests
{
    const string Q3 = "model.layers.3.self_attn.q_proj";

    [Fact]
    public void List_matches_exact_name_or_dotted_suffix_only()
    {
        var m = TargetMatcher.FromNames(["q_proj", "mlp.down_proj"]);
        Assert.True(m.Matches(Q3));
        Assert.True(m.Matches("q_proj"));
        Assert.True(m.Matches("model.layers.0.mlp.down_proj"));
        Assert.False(m.Matches("model.layers.0.self_attn.xq_proj")); // suffix must start at a dot
        Assert.False(m.Matches("model.layers.0.self_attn.q_proj.lora_A"));
    }

    [Fact]
    public void String_is_a_full_match_regex()
    {
        var m = TargetMatcher.FromRegex(@".*\.(q|v)_proj");
        Assert.True(m.Matches(Q3));
        Assert.True(m.Matches("model.layers.0.self_attn.v_proj"));
        Assert.False(m.Matches("model.layers.0.self_attn.k_proj"));
        Assert.False(TargetMatcher.FromRegex("q_proj").Matches(Q3)); // a partial match is not enough
    }

    [Fact]
    public void All_linear_takes_linear_modules_but_not_the_output_head()
    {
        var m = TargetMatcher.AllLinear();
        Assert.True(m.Matches(Q3));
        Assert.False(m.Matches("lm_head"));
        Assert.False(m.Matches("model.layers.0.input_layernorm", isLinear: false));
        var shape = Presets.Shape("gpt2");
        var matched = shape.Modules.Where(m.Matches).Select(x => x.Name).ToList();
        Assert.Equal(12 * 4, matched.Count); // c_attn, attn.c_proj, c_fc, mlp.c_proj per block
    }

    [Fact]
    public void Exclude_modules_wins_over_targets()
    {
        var m = TargetMatcher.AllLinear(new TargetFilters { ExcludeModules = ["down_proj"] });
        Assert.False(m.Matches("model.layers.1.mlp.down_proj"));
        Assert.True(m.Matches("model.layers.1.mlp.up_proj"));
        var r = TargetMatcher.FromNames(["q_proj"], new TargetFilters { ExcludeRegex = @".*layers\.0\..*" });
        Assert.False(r.Matches("model.layers.0.self_attn.q_proj"));
        Assert.True(r.Matches("model.layers.10.self_attn.q_proj"));
    }

    [Fact]
    public void Layers_to_transform_keeps_only_listed_layer_indices()
    {
        var m = TargetMatcher.FromNames(["q_proj"], new TargetFilters { LayersToTransform = [0, 3] });
        Assert.True(m.Matches(Q3));
        Assert.True(m.Matches("model.layers.0.self_attn.q_proj"));
        Assert.False(m.Matches("model.layers.1.self_attn.q_proj"));
        Assert.False(m.Matches("model.layers.13.self_attn.q_proj"));
        var gpt = TargetMatcher.FromNames(["c_attn"], new TargetFilters { LayersToTransform = [2], LayersPattern = "h" });
        Assert.True(gpt.Matches("transformer.h.2.attn.c_attn"));
        Assert.False(gpt.Matches("transformer.h.1.attn.c_attn"));
    }

    [Fact]
    public void Layers_to_transform_shrinks_a_plan()
    {
        var all = MemoryPlanner.Plan("smollm2-135m", new PlanRequest { Rank = 8 });
        var two = MemoryPlanner.Plan("smollm2-135m", new PlanRequest
        {
            Rank = 8, Targets = TargetMatcher.FromNames(["q_proj", "v_proj"], new TargetFilters { LayersToTransform = [0, 1] }),
        });
        long perLayer = 8 * (576 + 576) + 8 * (576 + 192);
        Assert.Equal(30 * perLayer, all.TrainableParameters);
        Assert.Equal(2 * perLayer, two.TrainableParameters);
    }

    [Fact]
    public void Parse_reads_the_cli_forms()
    {
        Assert.True(TargetMatcher.Parse("all-linear").Matches("model.layers.0.mlp.gate_proj"));
        Assert.True(TargetMatcher.Parse("regex:.*\\.k_proj").Matches("model.layers.0.self_attn.k_proj"));
        var list = TargetMatcher.Parse("q_proj, v_proj");
        Assert.True(list.Matches("a.v_proj"));
        Assert.False(list.Matches("a.k_proj"));
    }

    [Fact]
    public void Bad_specs_are_errors_naming_the_field()
    {
        Assert.Equal("target_modules", Assert.Throws<PlanException>(() => TargetMatcher.FromRegex("(")).Field);
        Assert.Equal("target_modules", Assert.Throws<PlanException>(() => TargetMatcher.FromNames([])).Field);
        Assert.Equal("layers_to_transform", Assert.Throws<PlanException>(() =>
            TargetMatcher.FromRegex(".*", new TargetFilters { LayersToTransform = [1] })).Field);
        Assert.Equal("target_modules", Assert.Throws<PlanException>(() =>
            MemoryPlanner.Plan("smollm2-135m", new PlanRequest { Targets = TargetMatcher.FromNames(["nope"]) })).Field);
    }
}
