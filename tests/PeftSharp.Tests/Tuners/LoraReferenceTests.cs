using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>
/// LoRA/DoRA forwards against an independent float64 reference: the effective weights W + s·B·A (DoRA:
/// m/||W + s·B·A||·(W + s·B·A)) are computed with plain loops from the adapter tensors, loaded into
/// <see cref="ReferenceLlama"/>, and its logits compared with the adapted engine's.
/// </summary>
public class LoraReferenceTests
{
    static readonly int[] Ids = [3, 17, 42, 8, 0, 25, 49, 11, 30];

    static JsonObject Qwen2() => RandomModel.LlamaConfig(modelType: "qwen2", heads: 4, kvHeads: 2);

    static JsonObject Llama3()
    {
        var c = RandomModel.LlamaConfig(heads: 4, kvHeads: 1, tied: true);
        c["rope_theta"] = 500000.0;
        c["rope_scaling"] = new JsonObject
        {
            ["rope_type"] = "llama3", ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0,
            ["original_max_position_embeddings"] = 16,
        };
        return c;
    }

    public static TheoryData<string, string> Cases => new()
    {
        { "llama3", "q_v" }, { "llama3", "all-linear" }, { "llama3", "rslora-patterns" }, { "llama3", "dora-mlp" },
        { "qwen2", "q_v" }, { "qwen2", "all-linear" }, { "qwen2", "regex" }, { "qwen2", "dora-mlp" },
    };

    internal static LoraConfig Config(string variant) => variant switch
    {
        "q_v" => new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = LoraInit.False },
        "all-linear" => new LoraConfig { R = 3, LoraAlpha = 6, TargetModulesRegex = "all-linear", InitLoraWeights = LoraInit.False },
        "regex" => new LoraConfig { R = 2, LoraAlpha = 5, TargetModulesRegex = @"model\.layers\.1\..*(k_proj|down_proj)", InitLoraWeights = LoraInit.False },
        "rslora-patterns" => new LoraConfig
        {
            R = 4, LoraAlpha = 16, UseRslora = true, TargetModules = ["q_proj", "o_proj", "up_proj"], InitLoraWeights = LoraInit.False,
            RankPattern = new Dictionary<string, int> { ["o_proj"] = 2 }, AlphaPattern = new Dictionary<string, double> { [@"layers\.1\.mlp\.up_proj"] = 3 },
        },
        "dora-mlp" => new LoraConfig { R = 4, LoraAlpha = 8, UseDora = true, TargetModules = ["gate_proj", "up_proj", "down_proj"], InitLoraWeights = LoraInit.False },
        _ => throw new ArgumentException(variant),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void AdaptedLogitsMatchHandMergedReference(string arch, string variant)
    {
        string dir = RandomModel.Write(arch == "qwen2" ? Qwen2() : Llama3(), seed: 5);
        using var model = ModelLoader.Load(dir);
        var cfg = Config(variant);
        var adapter = LoraInjector.Inject(model, cfg, "default", seed: 11);
        if (cfg.UseDora) PerturbMagnitudes(adapter);

        var reference = new ReferenceLlama(dir);
        foreach (var (path, layer) in adapter.Layers)
            reference.Override(path + ".weight", HandMerged(reference.Weight(path + ".weight"), layer, cfg.ScalingFor(path)));
        var expectedRows = reference.Forward(Ids);

        using var _ = no_grad();
        using var ids = tensor(Ids.Select(i => (long)i).ToArray()).unsqueeze(0);
        using var logits = model.Forward(ids);
        using var expected = tensor(expectedRows).unsqueeze(0);
        double rel = TestPaths.RelativeError(logits, expected);
        Assert.True(rel <= 1e-5, $"relative error {rel:E3}");
        // The adapter changed the output noticeably, so the comparison is meaningful.
        var baseRows = new ReferenceLlama(dir).Forward(Ids);
        using var baseLogits = tensor(baseRows).unsqueeze(0);
        Assert.True(TestPaths.RelativeError(baseLogits, expected) > 1e-3);
    }

    [Fact]
    public void ScalingFollowsRsloraAndPatterns()
    {
        var cfg = Config("rslora-patterns");
        Assert.Equal(16 / Math.Sqrt(4), cfg.ScalingFor("model.layers.0.self_attn.q_proj"));
        Assert.Equal(16 / Math.Sqrt(2), cfg.ScalingFor("model.layers.0.self_attn.o_proj"));
        Assert.Equal(3 / Math.Sqrt(4), cfg.ScalingFor("model.layers.1.mlp.up_proj"));
        Assert.Equal(16 / Math.Sqrt(4), cfg.ScalingFor("model.layers.0.mlp.up_proj"));
        Assert.Equal(2, cfg.RankFor("model.layers.3.self_attn.o_proj"));
    }

    /// <summary>Magnitudes away from ||W + sBA|| so DoRA differs from plain LoRA.</summary>
    internal static void PerturbMagnitudes(LoraAdapter adapter)
    {
        using var _ = no_grad();
        using var g = new Generator(3);
        foreach (var l in adapter.Layers.Values)
            using (var f = rand(l.Magnitude!.shape, generator: g))
                l.Magnitude.mul_(f.Times(0.6).Plus(0.7));
    }

    /// <summary>W' in float64 with loops: W + s·B·A, and for DoRA the per-row factor m / ||W + s·B·A||.</summary>
    internal static double[] HandMerged(double[] w, LoraLayer layer, double s)
    {
        double[] a = layer.A.detach().to_type(ScalarType.Float64).data<double>().ToArray();
        double[] b = layer.B.detach().to_type(ScalarType.Float64).data<double>().ToArray();
        int r = layer.Rank, o = (int)layer.B.shape[0], i = (int)layer.A.shape[1];
        var outW = new double[o * i];
        for (int row = 0; row < o; row++)
            for (int col = 0; col < i; col++)
            {
                double d = 0;
                for (int k = 0; k < r; k++) d += b[row * r + k] * a[k * i + col];
                outW[row * i + col] = w[row * i + col] + s * d;
            }
        if (layer.Magnitude is { } mag)
        {
            double[] m = mag.detach().to_type(ScalarType.Float64).data<double>().ToArray();
            for (int row = 0; row < o; row++)
            {
                double n = 0;
                for (int col = 0; col < i; col++) n += outW[row * i + col] * outW[row * i + col];
                double f = m[row] / Math.Sqrt(n);
                for (int col = 0; col < i; col++) outW[row * i + col] *= f;
            }
        }
        return outW;
    }
}
