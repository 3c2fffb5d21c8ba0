using PeftSharp.Memory;
using PeftSharp.Models;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tests.Tuners;

/// <summary>Trainable-parameter counts: shape-only arithmetic for big models, and the real injected tiny model.</summary>
public class ParameterCountTests
{
    [Fact]
    public void A4096SquareLinearAtRank8Has65536LoraParameters()
    {
        // Llama-2-7B's q_proj in layer 0 is exactly one 4096x4096 Linear.
        var cfg = new LoraConfig { R = 8, TargetModules = ["q_proj"], LayersToTransform = [0] };
        var rows = LoraParameterCount.PerModule(Presets.Shape("llama-2-7b"), cfg).ToList();
        Assert.Equal([("model.layers.0.self_attn.q_proj", 65_536L)], rows);
    }

    [Theory]
    [InlineData(false, 9_175_040L)]
    [InlineData(true, 9_289_728L)]
    public void Llama32_3B_QV_Rank32(bool dora, long expected)
    {
        var cfg = new LoraConfig { R = 32, LoraAlpha = 64, UseDora = dora, TargetModules = ["q_proj", "v_proj"] };
        Assert.Equal(expected, LoraParameterCount.For(Presets.Shape("llama-3.2-3b"), cfg));
        Assert.Equal(3_212_749_824L, Presets.Shape("llama-3.2-3b").TotalParameters);
    }

    [Theory]
    [InlineData("q_v")]
    [InlineData("all-linear")]
    [InlineData("rslora-patterns")]
    [InlineData("dora-mlp")]
    public void InjectedModelMatchesShapeArithmeticAndReport(string variant)
    {
        var cfg = LoraReferenceTests.Config(variant);
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        long baseTotal = model.ParameterCount();
        var adapter = LoraInjector.Inject(model, cfg, "default", 1);
        long expected = LoraParameterCount.For(ModelShape.Load(TestPaths.TinyLlama), cfg);
        Assert.Equal(expected, adapter.ParameterCount);
        var report = ParameterReport.For(model);
        Assert.Equal(expected, report.Trainable);
        Assert.Equal(baseTotal + expected, report.Total);
        Assert.Equal(100.0 * expected / (baseTotal + expected), report.Percent, 10);
        Assert.Equal(expected, report.Modules.Sum(m => m.Trainable));
        var q0 = report.Modules.Single(m => m.Module == "model.layers.0.self_attn.q_proj");
        Assert.Equal(variant is "dora-mlp" ? 0 : cfg.RankFor(q0.Module) * 128, q0.Trainable);
        Assert.StartsWith($"trainable params: {expected:N0} || all params: {baseTotal + expected:N0} || trainable%: ", report.ToString());
    }

    [Fact]
    public void ReportCountsLoadedInferenceAdaptersAsFrozen()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var adapter = PeftSharp.Tuners.Lora.PeftAdapterIO.Load(model, Path.Combine(TestPaths.TinyLlama, "adapters", "lora"));
        var report = ParameterReport.For(model);
        Assert.Equal(0, report.Trainable);
        Assert.Equal(model.ParameterCount() + adapter.ParameterCount, report.Total);
        Assert.Equal(2 * (4 * (64 + 64) + 4 * (64 + 32)), adapter.ParameterCount);
    }
}
