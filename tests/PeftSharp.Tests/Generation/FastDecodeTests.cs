using System.Text.Json.Nodes;
using PeftSharp.Generation;
using PeftSharp.Generation.Fast;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using PeftSharp.Tuners.Lora;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Generation;

/// <summary>
/// The C# batch-1 decode step (Generation/Fast) against the libtorch forward it replaces: the same logits after the
/// same prefill, step by step, and the same greedy ids and text through TextGenerator and `peft generate`.
/// </summary>
[Collection("console")]   // the CLI cases write to the process-wide console
public class FastDecodeTests(ITestOutputHelper output)
{
    internal static readonly int[] Prompt = [5, 77, 120, 3, 9];

    /// <summary>Families and shapes the fast step covers, as random HF folders (widths large enough for the threaded kernels).</summary>
    public static TheoryData<string> Models() => ["tiny-llama fixture", "llama gqa wide", "llama mha long cache", "qwen2 bias", "qwen3 qk-norm", "phi3 fused partial-rotary", "llama tied"];

    static string Folder(string name) => name switch
    {
        "tiny-llama fixture" => TestPaths.TinyLlama,
        "llama gqa wide" => RandomModel.Write(RandomModel.LlamaConfig(hidden: 256, intermediate: 512, heads: 8, kvHeads: 2, vocab: 300, layers: 3)),
        // kv width 512: from 32 cached tokens on, the attention's heads are split over the worker pool too.
        "llama mha long cache" => RandomModel.Write(RandomModel.LlamaConfig(hidden: 512, intermediate: 256, heads: 8, kvHeads: 8, vocab: 300)),
        "qwen2 bias" => RandomModel.Write(With(RandomModel.LlamaConfig(hidden: 128, intermediate: 256, vocab: 200, modelType: "qwen2"), "attention_bias", true)),
        "qwen3 qk-norm" => RandomModel.Write(RandomModel.Qwen3Config()),
        "phi3 fused partial-rotary" => RandomModel.Write(RandomModel.Phi3Config()),
        "llama tied" => RandomModel.Write(RandomModel.LlamaConfig(hidden: 64, intermediate: 96, vocab: 300, tied: true)),
        _ => throw new ArgumentException(name),
    };

    static JsonObject With(JsonObject c, string key, JsonNode value) { c[key] = value; return c; }

    [Theory]
    [MemberData(nameof(Models))]
    public void EachStepsLogitsEqualTheLibtorchForward(string name)
    {
        using var model = ModelLoader.Load(Folder(name));
        Assert.Null(FastDecodeEligibility.WhyNot(model, 64));
        AssertStepsMatch(model, Prompt.Select(i => i % model.Config.VocabSize).ToArray(), steps: 40);
    }

    /// <summary>The real TinyStories-260K weights (skipped with a reason when the fixture is absent).</summary>
    [Fact]
    public void TinyStoriesStepsEqualTheLibtorchForward()
    {
        if (RealFixtures.Folder("tinystories-260k/hf", output) is not { } dir) return;
        using var model = ModelLoader.Load(dir);
        AssertStepsMatch(model, [1, 365, 301, 5], steps: 60);
    }

    /// <summary>
    /// Prefill on libtorch, the cache copied into the C# decoder, then each greedy token fed to both: logits agree to
    /// 2e-5 of their largest magnitude, on two threads so the worker pool runs. Only the summation order differs: the
    /// other random models and the fixture stay under ~6e-6; the 512-wide random model reaches 1.1e-5 at any step (it does not
    /// jump where its attention goes parallel).
    /// </summary>
    static void AssertStepsMatch(CausalLM model, int[] prompt, int steps)
    {
        using var _ = no_grad();
        using var cache = new KvCache(model.Config.NumLayers);
        int next;
        using (var ids = tensor(prompt.Select(i => (long)i).ToArray(), ScalarType.Int64).unsqueeze(0))
        using (var logits = model.Forward(ids, cache, lastOnly: true))
            next = (int)logits[0, -1].argmax().item<long>();
        using var fast = new FastDecoder(model, capacity: prompt.Length + 4, threads: 2);   // small: the cache must grow
        fast.LoadCache(cache);
        for (int s = 0; s < steps; s++)
        {
            float[] mine = fast.Step(next).ToArray();
            float[] theirs;
            using (var scope = NewDisposeScope())
            using (var ids = tensor(new long[] { next }, ScalarType.Int64).unsqueeze(0))
                theirs = model.Forward(ids, cache, lastOnly: true)[0, -1].data<float>().ToArray();
            float scale = theirs.Max(MathF.Abs), worst = mine.Zip(theirs, (a, b) => MathF.Abs(a - b)).Max();
            Assert.True(worst <= 2e-5f * scale, $"step {s}: max |fast - libtorch| = {worst:E2} against max |logit| {scale:E2}");
            next = Array.IndexOf(theirs, theirs.Max());
            Assert.Equal(next, Array.IndexOf(mine, mine.Max()));
        }
        Assert.Equal(cache.Length, fast.Length);
    }

    [Fact]
    public void Gemma2AndBf16WeightsSayWhyTheyDecodeOnLibtorch()
    {
        string? path = null;
        using (var gemma = ModelLoader.Load(RandomModel.Write(RandomModel.Gemma2Config())))
            _ = TextGenerator.Generate(gemma, [5, 7, 3], new SamplingOptions { MaxNewTokens = 3 }, [], DecodePath.Auto, l => path = l).ToList();   // vocab 50
        Assert.StartsWith("decode: libtorch forward (model family gemma2", path);
        using (var bf16 = ModelLoader.Load(TestPaths.TinyLlama, new LoadOptions { Dtype = ScalarType.BFloat16 }))
            _ = TextGenerator.Generate(bf16, Prompt, new SamplingOptions { MaxNewTokens = 3 }, [], DecodePath.Auto, l => path = l).ToList();
        Assert.Equal("decode: libtorch forward (the weights are BFloat16 (the C# decode reads fp32))", path);
    }

    [Fact]
    public void PeftGenerateVerboseNamesThePathAndTorchPrintsTheSameText()
    {
        string[] args = ["generate", "--model", TestPaths.TinyLlama, "--prompt", "hello world", "--max-new-tokens", "12", "--temperature", "0", "--verbose"];
        var (code, fast, err) = CliCapture.Run(args);
        Assert.True(code == 0, err);
        Assert.Contains("decode: C# batch-1 step", err);
        var (code2, slow, err2) = CliCapture.Run([.. args, "--decode", "torch"]);
        Assert.True(code2 == 0, err2);
        Assert.Contains("decode: libtorch forward (asked for)", err2);
        Assert.Equal(slow, fast);
        var (bad, _, badErr) = CliCapture.Run([.. args, "--decode", "gpu"]);
        Assert.NotEqual(0, bad);
        Assert.Contains("--decode", badErr);
    }
}

/// <summary>
/// Greedy and seeded ids through <see cref="TextGenerator"/>, fast step against the libtorch forward, compared exactly:
/// run alone, as the serial collection's other exact comparisons are. The greedy test failed once in a full parallel run
/// on a 2-core Zen 3 (its message was not kept) and passed alone, in its class and in two more full runs. The suspected
/// cause, not confirmed: beside other tests the libtorch side's GEMMs run on fewer of the OpenMP team's threads, round
/// differently, and a near-tie of the random fixture's logits flips.
/// </summary>
[Collection(Training.SerialCollection.Name)]
public class FastDecodeIdsTests
{
    static readonly int[] Prompt = FastDecodeTests.Prompt;

    [Fact]
    public void GenerateTakesTheFastPathAndGivesTheLibtorchIds()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var o = new SamplingOptions { MaxNewTokens = 30 };
        string? path = null;
        var fast = TextGenerator.Generate(model, Prompt, o, [], DecodePath.Auto, l => path = l).ToList();
        Assert.StartsWith("decode: C# batch-1 step", path);
        var slow = TextGenerator.Generate(model, Prompt, o, [], DecodePath.Torch, l => path = l).ToList();
        Assert.Equal("decode: libtorch forward (asked for)", path);
        Assert.Equal(slow, fast);
        // Seeded sampling draws the same tokens from the same logits.
        var sampled = new SamplingOptions { MaxNewTokens = 30, Temperature = 0.8, TopK = 20, Seed = 3, RepetitionPenalty = 1.3 };
        Assert.Equal(TextGenerator.Generate(model, Prompt, sampled, [], DecodePath.Torch).ToList(), TextGenerator.Generate(model, Prompt, sampled, []).ToList());
    }

    [Fact]
    public void AnUnmergedAdapterFallsBackAndAMergedOneDecodesFast()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        LoraInjector.Inject(model, new LoraConfig { R = 4, LoraAlpha = 8, TargetModulesRegex = ".*(q_proj|v_proj|down_proj)", InitLoraWeights = LoraInit.False }, "default", 5);
        LoraModel.Of(model).SetActive("default");
        var o = new SamplingOptions { MaxNewTokens = 20 };
        string? path = null;
        var unmerged = TextGenerator.Generate(model, Prompt, o, [], DecodePath.Auto, l => path = l).ToList();
        Assert.StartsWith("decode: libtorch forward (an unmerged adapter on model.layers.0.self_attn.q_proj)", path);
        LoraModel.Of(model).Merge("default");
        var merged = TextGenerator.Generate(model, Prompt, o, [], DecodePath.Auto, l => path = l).ToList();
        Assert.StartsWith("decode: C# batch-1 step", path);
        Assert.Equal(unmerged, merged);
    }
}
