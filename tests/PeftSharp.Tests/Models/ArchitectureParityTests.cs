using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>The engine against an independent float64 reference, across the architecture variants we support.</summary>
public class ArchitectureParityTests
{
    static readonly int[] Ids = [3, 17, 42, 8, 0, 25, 49, 11, 30];

    static void AssertMatchesReference(string dir, double relTol = 1e-5, double absTol = 1e-3)
    {
        var reference = new ReferenceLlama(dir).Forward(Ids);
        using var model = ModelLoader.Load(dir);
        using var _ = no_grad();
        using var ids = tensor(Ids.Select(i => (long)i).ToArray()).unsqueeze(0);
        using var logits = model.Forward(ids);
        using var expected = tensor(reference).unsqueeze(0);
        double rel = TestPaths.RelativeError(logits, expected);
        Assert.True(rel <= relTol, $"relative error {rel:E3} > {relTol:E1}");
        Assert.True(TestPaths.MaxAbsError(logits, expected) <= absTol);
    }

    [Fact] public void ReferenceItselfReproducesGolden()
    {
        using var golden = new PeftSharp.IO.SafeTensorsFile(Path.Combine(TestPaths.TinyLlama, "golden.safetensors"));
        using var ids = golden.Load("input_ids");
        using var expected = golden.Load("logits");
        var row = ids[0].data<long>().Select(x => (int)x).ToArray();
        using var mine = tensor(new ReferenceLlama(TestPaths.TinyLlama).Forward(row));
        Assert.True(TestPaths.RelativeError(mine, expected[0]) < 1e-6);
    }

    [Fact] public void LlamaWithGqa() => AssertMatchesReference(RandomModel.Write(RandomModel.LlamaConfig(heads: 4, kvHeads: 2)));

    [Fact] public void LlamaMultiHead() => AssertMatchesReference(RandomModel.Write(RandomModel.LlamaConfig(heads: 4, kvHeads: 4)));

    [Fact] public void MultiQuery() => AssertMatchesReference(RandomModel.Write(RandomModel.LlamaConfig(heads: 8, kvHeads: 1)));

    [Fact] public void TiedEmbeddings() => AssertMatchesReference(RandomModel.Write(RandomModel.LlamaConfig(tied: true)));

    [Fact] public void Qwen2WithQkvBiases()
    {
        var dir = RandomModel.Write(RandomModel.LlamaConfig(modelType: "qwen2", tied: true));
        using var model = ModelLoader.Load(dir);
        Assert.NotNull(model.Layers[0].self_attn.q_proj.bias);
        Assert.Null(model.Layers[0].self_attn.o_proj.bias);
        AssertMatchesReference(dir);
    }

    [Fact] public void Llama31RopeScaling()
    {
        var cfg = RandomModel.LlamaConfig();
        cfg["rope_theta"] = 500000.0;
        cfg["rope_scaling"] = new JsonObject
        {
            ["rope_type"] = "llama3", ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0,
            ["original_max_position_embeddings"] = 8192,
        };
        var inv = Rope.InverseFrequencies(8, 500000.0, ModelConfig.FromJson(cfg).RopeScaling);
        var plain = Rope.InverseFrequencies(8, 500000.0, null);
        // Wavelengths 2*pi/inv: ~6 and ~167 (< 8192/4: unchanged), ~4444 (smoothed), ~118k (> 8192: divided by 8).
        Assert.Equal(plain[0], inv[0]);
        Assert.Equal(plain[1], inv[1]);
        Assert.True(inv[2] < plain[2] && inv[2] > plain[2] / 8);
        Assert.Equal(plain[3] / 8, inv[3], 15);
        AssertMatchesReference(RandomModel.Write(cfg));
    }

    [Fact] public void ExplicitHeadDim()
    {
        var cfg = RandomModel.LlamaConfig(hidden: 32, heads: 4, kvHeads: 2);
        cfg["head_dim"] = 16; // q/k/v project to 64 while hidden is 32, as in Gemma-style configs
        AssertMatchesReference(RandomModel.Write(cfg));
    }

    [Fact] public void Bf16CheckpointLoadsIntoFp32() => AssertMatchesReference(RandomModel.Write(RandomModel.LlamaConfig(), dtype: "BF16"));

    [Fact] public void Fp16Checkpoint() => AssertMatchesReference(RandomModel.Write(RandomModel.LlamaConfig(), dtype: "F16"));

    [Fact] public void ShardedCheckpoint() => AssertMatchesReference(RandomModel.Write(RandomModel.LlamaConfig(), shards: 3));

    [Fact] public void MistralModelType()
    {
        var cfg = RandomModel.LlamaConfig();
        cfg["model_type"] = "mistral";
        AssertMatchesReference(RandomModel.Write(cfg));
    }

    [Fact] public void Bf16ComputeIsCloseToFp32()
    {
        var dir = RandomModel.Write(RandomModel.LlamaConfig());
        using var m32 = ModelLoader.Load(dir);
        using var m16 = ModelLoader.Load(dir, new LoadOptions { Dtype = ScalarType.BFloat16 });
        using var _ = no_grad();
        using var ids = tensor(Ids.Select(i => (long)i).ToArray()).unsqueeze(0);
        using var a = m32.Forward(ids);
        using var b = m16.Forward(ids);
        Assert.Equal(ScalarType.BFloat16, b.dtype);
        Assert.True(TestPaths.RelativeError(b, a) < 0.05);
    }
}
