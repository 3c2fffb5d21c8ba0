using System.Text.Json.Nodes;
using PeftSharp.Generation;
using PeftSharp.Models;
using PeftSharp.Tests.Support;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// `serve` on the new families: requests of different lengths, past the sliding window, batched together (left
/// padding, rows joining and leaving), and Phi-3 longrope rows crossing the switch to the long factors answer what
/// generating each alone answers.
/// </summary>
[Collection("console")]
public class ModelFamilyServingTests
{
    [Theory]
    [InlineData("gemma2")]
    [InlineData("phi3")]
    public async Task Batched_windowed_rows_equal_generating_each_alone(string family)
    {
        // Phi-3 without longrope: transformers picks longrope's factors by the largest position in the whole batch,
        // so a short row batched with a long one rightly differs from the same row alone.
        var cfg = family == "gemma2" ? RandomModel.Gemma2Config(layers: 2, window: 6) : RandomModel.Phi3Config();
        if (family == "phi3") cfg["sliding_window"] = 6;
        string dir = WriteModel(cfg, seed: 5);
        using var tokenizer = TextTokenizer.FromFolder(dir, ModelConfig.Load(dir));
        var cases = new (string Prompt, int Max)[] { ("a much longer prompt than the window", 9), ("hi", 14), ("medium prompt", 4) };
        var expected = cases.Select(c => tokenizer.Decode(GenerateAlone(dir, tokenizer.Encode(c.Prompt), c.Max))).ToList();

        await using var h = await ServingHarness.Start(modelDir: dir, servedName: family);
        var texts = await Together(h, cases.Select(c => (JsonNode)c.Prompt), family, cases.Select(c => c.Max).ToArray());
        Assert.Equal(expected, texts.Select(t => t.Text));
    }

    [Fact]
    public async Task Phi3_longrope_rows_crossing_the_switch_equal_generate()
    {
        // original_max_position_embeddings 8, prompts of 4 ids, 14 new tokens: every row passes the switch to the long
        // factors mid-generation, where generate (as transformers) recomputes the whole sequence. Two rows of the same
        // length batched together cross at the same step (the factors are chosen by the batch's largest position, as
        // transformers does, so rows crossing at different steps would rightly differ from generating alone).
        string dir = WriteModel(RandomModel.Phi3Config(longRope: true, originalMax: 8), seed: 2);
        using var tokenizer = TextTokenizer.FromFolder(dir, ModelConfig.Load(dir));
        int[][] prompts = [[3, 17, 42, 8], [5, 99, 7, 120]];
        const int max = 14;
        var expected = prompts.Select(p => GenerateAlone(dir, p, max)).ToList();
        // No stop id was generated, so every row runs all 14 tokens, across the switch.
        Assert.All(expected, e => Assert.Equal(max, e.Count));
        var want = expected.Select(e => (tokenizer.Decode(e), max)).ToList();

        await using var h = await ServingHarness.Start(modelDir: dir, servedName: "phi3");
        Assert.Equal(want[..1], await Together(h, [Ids(prompts[0])], "phi3", [max]));
        Assert.Equal(want, await Together(h, prompts.Select(Ids), "phi3", [max, max]));

        static JsonNode Ids(int[] ids) => new JsonArray(ids.Select(i => (JsonNode)i).ToArray());
    }

    /// <summary>A random model of <paramref name="cfg"/> with a 260-id vocabulary, eos 259, and tiny-llama's byte-level tokenizer.</summary>
    static string WriteModel(JsonObject cfg, int seed)
    {
        cfg["vocab_size"] = 260;
        cfg["eos_token_id"] = 259;
        string dir = RandomModel.Write(cfg, seed);
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        return dir;
    }

    /// <summary>What `peft generate` gives greedily (TextGenerator on a fresh model), stop ids dropped.</summary>
    static List<int> GenerateAlone(string dir, int[] prompt, int max)
    {
        using var model = ModelLoader.Load(dir);
        using var tokenizer = TextTokenizer.FromFolder(dir, model.Config);
        var stop = tokenizer.StopIds(model.Config);
        return TextGenerator.Generate(model, prompt, new SamplingOptions { MaxNewTokens = max }, stop).Where(i => !stop.Contains(i)).ToList();
    }

    /// <summary>Greedy completions of every prompt, lined up while the worker is held so they are prefilled and decoded in one batch.</summary>
    static async Task<(string Text, int Tokens)[]> Together(ServingHarness h, IEnumerable<JsonNode> prompts, string model, int[] max)
    {
        var gate = h.HoldWorker();
        var tasks = prompts.Select(async (p, i) =>
        {
            var (status, json) = await h.Post("v1/completions", new JsonObject { ["model"] = model, ["prompt"] = p, ["max_tokens"] = max[i], ["temperature"] = 0 });
            Assert.True(status == 200, json.ToJsonString());
            return (json["choices"]![0]!["text"]!.GetValue<string>(), json["usage"]!["completion_tokens"]!.GetValue<int>());
        }).ToList();
        await ServingHarness.WaitUntil(() => h.Server.State.Scheduler.QueuedJobs == tasks.Count, "all requests queued");
        gate.Release();
        return await Task.WhenAll(tasks);
    }
}
