using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>Qwen3, Phi-3 and Gemma 2 against the float64 reference, on random tiny models with HF parameter names.</summary>
// It prints to the console, so it runs beside the tests that capture it, not during them.
[Collection("console")]
public class ModelFamilyParityTests
{
    static readonly int[] Ids = Enumerable.Range(0, 20).Select(i => (i * 11 + 5) % 50).ToArray();

    static double Error(string dir, int[] ids)
    {
        var reference = new ReferenceLlama(dir).Forward(ids);
        using var model = ModelLoader.Load(dir);
        using var _ = no_grad();
        using var input = tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0);
        using var logits = model.Forward(input);
        using var expected = tensor(reference).unsqueeze(0);
        return TestPaths.RelativeError(logits, expected);
    }

    static void AssertParity(string dir, int[]? ids = null)
    {
        double rel = Error(dir, ids ?? Ids);
        Console.WriteLine($"{Path.GetFileName(dir)}: relative logits error {rel:E2}");
        Assert.True(rel < 1e-5, $"relative error {rel:E3}");
    }

    static string[] ParameterNames(string dir)
    {
        using var model = ModelLoader.Load(dir);
        return model.named_parameters().Select(p => p.name).ToArray();
    }

    [Fact]
    public void Qwen3_has_per_head_qk_norms_and_no_qkv_bias()
    {
        var dir = RandomModel.Write(RandomModel.Qwen3Config());
        var names = ParameterNames(dir);
        Assert.Contains("model.layers.0.self_attn.q_norm.weight", names);
        Assert.Contains("model.layers.0.self_attn.k_norm.weight", names);
        Assert.DoesNotContain("model.layers.0.self_attn.q_proj.bias", names);
        using var model = ModelLoader.Load(dir);
        Assert.Equal(64, model.Layers[0].self_attn.q_proj.OutFeatures);   // 4 heads x head_dim 16, hidden 32
        AssertParity(dir);
    }

    [Fact]
    public void Qwen3_untied() => AssertParity(RandomModel.Write(RandomModel.Qwen3Config(tied: false)));

    [Fact]
    public void Phi3_fused_projections_and_partial_rotary()
    {
        var dir = RandomModel.Write(RandomModel.Phi3Config());
        var names = ParameterNames(dir);
        Assert.Contains("model.layers.0.self_attn.qkv_proj.weight", names);
        Assert.Contains("model.layers.0.mlp.gate_up_proj.weight", names);
        Assert.DoesNotContain("model.layers.0.self_attn.q_proj.weight", names);
        Assert.Equal(12, ModelConfig.Load(dir).RotaryDim);
        AssertParity(dir);
    }

    [Fact]
    public void Phi3_full_rotary() => AssertParity(RandomModel.Write(RandomModel.Phi3Config(partialRotary: 1.0)));

    [Fact]
    public void Phi3_longrope_short_and_long_factors()
    {
        // original_max_position_embeddings 8: 8 tokens use the short factors, 20 the long ones; both scale cos/sin.
        var dir = RandomModel.Write(RandomModel.Phi3Config(longRope: true, originalMax: 8));
        var c = ModelConfig.Load(dir);
        Assert.Equal(Math.Sqrt(1 + Math.Log(32) / Math.Log(8)), c.RopeScaling!.AttentionFactor, 12);
        AssertParity(dir, Ids.Take(8).ToArray());
        AssertParity(dir, Ids);
        var rope = new Rope(c);
        Assert.NotEqual(rope.FrequenciesFor(7), rope.FrequenciesFor(8));
        // The early Phi-3 128k spelling "su" is the same scaling.
        var su = RandomModel.Phi3Config(longRope: true, originalMax: 8);
        su["rope_scaling"]!["type"] = "su";
        Assert.Equal(rope.FrequenciesFor(8), new Rope(ModelConfig.FromJson(su)).FrequenciesFor(8));
    }

    [Fact]
    public void Phi3_longrope_generation_recomputes_at_the_switch_like_transformers()
    {
        // original_max_position_embeddings 8, prompt 4, 14 new tokens: the cached generation crosses the switch to
        // the long factors. transformers then drops the cache and recomputes, so every later step equals a full
        // recomputation (which is what GenerateWithoutCache does at every step).
        var dir = RandomModel.Write(RandomModel.Phi3Config(longRope: true, originalMax: 8), seed: 2);
        using var model = ModelLoader.Load(dir);
        Assert.False(model.CacheGoesStale(7, 1));
        Assert.True(model.CacheGoesStale(8, 1));
        Assert.False(model.CacheGoesStale(9, 1));
        var o = new PeftSharp.Generation.SamplingOptions { MaxNewTokens = 14 };
        int[] prompt = [3, 17, 42, 8];
        var cached = PeftSharp.Generation.TextGenerator.Generate(model, prompt, o, []).ToList();
        Assert.Equal(PeftSharp.Generation.TextGenerator.GenerateWithoutCache(model, prompt, o, []), cached);
    }

    [Fact]
    public void Gemma2_block_softcaps_and_alternating_windows()
    {
        var dir = RandomModel.Write(RandomModel.Gemma2Config(layers: 3, window: 4));
        var c = ModelConfig.Load(dir);
        Assert.Equal([4, (int?)null, 4], Enumerable.Range(0, 3).Select(c.WindowOf).ToArray());
        var names = ParameterNames(dir);
        Assert.Contains("model.layers.0.pre_feedforward_layernorm.weight", names);
        Assert.Contains("model.layers.0.post_feedforward_layernorm.weight", names);
        Assert.DoesNotContain("lm_head.weight", names);
        AssertParity(dir);   // 20 tokens: the window of 4 bites on layers 0 and 2
    }

    [Fact]
    public void Gemma2_cached_generation_matches_the_full_forward()
    {
        var dir = RandomModel.Write(RandomModel.Gemma2Config(layers: 2, window: 4));
        using var model = ModelLoader.Load(dir);
        using var _ = no_grad();
        using var all = tensor(Ids.Select(i => (long)i).ToArray()).unsqueeze(0);
        using var full = model.Forward(all);
        using var cache = new KvCache(2);
        var rows = new List<Tensor>();
        for (int p = 0; p < Ids.Length; p++) rows.Add(model.Forward(all.narrow(1, p, 1), cache)[0]);
        using var stepped = stack(rows.ToArray().Select(r => r[0]).ToArray(), 0);
        Assert.True(TestPaths.RelativeError(stepped, full[0]) < 1e-5);
        Assert.True(cache.StoredSlots(0) <= 3);
        foreach (var r in rows) r.Dispose();
    }

    [Fact]
    public void Gemma2_bf16_compute_is_close_to_fp32_and_stays_capped()
    {
        // bf16 runs the same path with the sqrt(hidden) normalizer rounded to bf16, as HF's torch.tensor(..., dtype) is.
        var dir = RandomModel.Write(RandomModel.Gemma2Config());
        using var m32 = ModelLoader.Load(dir);
        using var m16 = ModelLoader.Load(dir, new LoadOptions { Dtype = ScalarType.BFloat16 });
        using var _ = no_grad();
        using var ids = tensor(Ids.Select(i => (long)i).ToArray()).unsqueeze(0);
        using var a = m32.Forward(ids);
        using var b = m16.Forward(ids);
        Assert.Equal(ScalarType.BFloat16, b.dtype);
        Assert.True(TestPaths.RelativeError(b, a) < 0.05);
        using var bf = b.to_type(ScalarType.Float32);
        Assert.True(bf.abs().max().item<float>() <= 3.0f);   // final_logit_softcapping 3
    }
}
