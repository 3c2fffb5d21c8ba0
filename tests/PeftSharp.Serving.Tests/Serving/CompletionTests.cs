using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.Serving.Hosting;

namespace PeftSharp.Tests.Serving;

[Collection("console")]
public class CompletionTests
{
    static ServerOptions WithFixtures => new() { Adapters = [("lora", ServingHarness.LoraFixture), ("dora", ServingHarness.DoraFixture)] };

    [Fact]
    public async Task CompletionEqualsGeneratingAlone()
    {
        await using var h = await ServingHarness.Start(WithFixtures);
        foreach (var (model, dir) in new[] { ("tiny-llama", null), ("lora", ServingHarness.LoraFixture), ("dora", ServingHarness.DoraFixture) })
        {
            string text = await h.CompletionText(model, "hello world", 12);
            Assert.Equal(ServingHarness.Reference(dir, h.Encode("hello world"), 12), text);
        }
        // The adapters really change the output, so the comparison above distinguishes them.
        Assert.NotEqual(await h.CompletionText("tiny-llama", "hello world", 12), await h.CompletionText("lora", "hello world", 12));
    }

    [Fact]
    public async Task HeterogeneousBatchRowsEqualServingEachAlone()
    {
        string dir = TestPaths.TempDir();
        string saved = ServingHarness.SavedAdapter(Path.Combine(dir, "r8"), seed: 3, rank: 8);
        await using var h = await ServingHarness.Start(WithFixtures with { Adapters = [.. WithFixtures.Adapters, ("r8", saved)] });
        var cases = new (string Model, string? Dir, string Prompt, int Max)[]
        {
            ("lora", ServingHarness.LoraFixture, "the quick brown fox", 20),
            ("tiny-llama", null, "a", 9),
            ("r8", saved, "serving many adapters", 15),
            ("dora", ServingHarness.DoraFixture, "hi there", 17),
            ("lora", ServingHarness.LoraFixture, "zz", 5),
            ("r8", saved, "one base", 25),
        };
        // Line every request up while the worker is held, so they are admitted into one batch of mixed adapters
        // and mixed prompt lengths (left padding) and leave it at different steps.
        var gate = h.HoldWorker();
        var tasks = cases.Select(c => h.CompletionText(c.Model, c.Prompt, c.Max)).ToList();
        await ServingHarness.WaitUntil(() => h.Server.State.Scheduler.QueuedJobs == cases.Length, "all requests queued");
        gate.Release();
        var texts = await Task.WhenAll(tasks);
        for (int i = 0; i < cases.Length; i++)
            Assert.Equal(ServingHarness.Reference(cases[i].Dir, h.Encode(cases[i].Prompt), cases[i].Max), texts[i]);
    }

    [Theory]
    [InlineData(null)]   // default: every waiting request in as few prefill forwards as padding allows
    [InlineData(1)]      // --max-prefill-batch 1: each prefilled alone
    public async Task WaitingRequestsArePrefilledTogetherAndAnswerAsAlone(int? maxPrefill)
    {
        await using var h = await ServingHarness.Start(WithFixtures with { MaxPrefillBatch = maxPrefill });
        // Prompt lengths close enough that padding never splits them (longest <= 2x the average).
        var cases = new (string Model, string? Dir, string Prompt, int Max)[]
        {
            ("lora", ServingHarness.LoraFixture, "the quick brown fox jumps", 6),
            ("tiny-llama", null, "over the lazy dog", 8),
            ("dora", ServingHarness.DoraFixture, "hello there friend", 7),
            ("lora", ServingHarness.LoraFixture, "a b c d e f", 5),
        };
        var lengths = cases.Select(c => h.Encode(c.Prompt).Length).ToList();
        Assert.True(lengths.Max() * lengths.Count <= 2 * lengths.Sum() && lengths.Distinct().Count() > 1, $"prompt lengths {string.Join(",", lengths)}");
        long forwards = await PrefillTogetherAsAlone(h, cases);
        Assert.Equal(maxPrefill == 1 ? cases.Length : 1, forwards);
        Assert.Equal(cases.Length, h.Server.State.Scheduler.PrefilledJobs);
    }

    [Fact]
    public async Task PrefillForwardsStayWithinTheTokenBudget()
    {
        // --max-prefill-tokens 16: the four prompts (padded rows x longest) cannot share one forward; the one over the
        // budget goes alone. Each answer is still what the request alone would get.
        const int budget = 16;
        await using var h = await ServingHarness.Start(WithFixtures with { MaxPrefillTokens = budget });
        var cases = new (string Model, string? Dir, string Prompt, int Max)[]
        {
            ("lora", ServingHarness.LoraFixture, "the quick brown fox jumps", 6),
            ("tiny-llama", null, "over the lazy dog", 8),
            ("dora", ServingHarness.DoraFixture, "hello there friend", 7),
            ("lora", ServingHarness.LoraFixture, "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen", 5),
        };
        var lengths = cases.Select(c => h.Encode(c.Prompt).Length).ToList();
        Assert.True(lengths[..3].Max() * 3 > budget && lengths[3] > budget, $"prompt lengths {string.Join(",", lengths)}");
        Assert.True(await PrefillTogetherAsAlone(h, cases) >= 3);
        Assert.Equal(lengths[3], h.Server.State.Scheduler.LargestPrefillTokens);   // the long prompt alone; the rest within 16
    }

    /// <summary>
    /// Queues every case while the worker is held, so the scheduler finds them all waiting at once; then asserts each
    /// answer equals the request served alone and returns the prefill forwards it took.
    /// </summary>
    static async Task<long> PrefillTogetherAsAlone(ServingHarness h, (string Model, string? Dir, string Prompt, int Max)[] cases)
    {
        var gate = h.HoldWorker();
        var tasks = cases.Select(c => h.CompletionText(c.Model, c.Prompt, c.Max)).ToList();
        await ServingHarness.WaitUntil(() => h.Server.State.Scheduler.QueuedJobs == cases.Length, "all requests queued");
        long forwardsBefore = h.Server.State.Scheduler.PrefillForwards;
        gate.Release();
        var texts = await Task.WhenAll(tasks);
        for (int i = 0; i < cases.Length; i++)
            Assert.Equal(ServingHarness.Reference(cases[i].Dir, h.Encode(cases[i].Prompt), cases[i].Max), texts[i]);
        return h.Server.State.Scheduler.PrefillForwards - forwardsBefore;
    }

    [Fact]
    public async Task StreamingChunksConcatenateToTheCompletion()
    {
        await using var h = await ServingHarness.Start(WithFixtures);
        var events = await Sse.Read(h.Http, "v1/completions", new JsonObject { ["model"] = "lora", ["prompt"] = "stream me", ["max_tokens"] = 14, ["temperature"] = 0, ["stream"] = true });
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events.SkipLast(1).Select(e => JsonNode.Parse(e)!).ToList();
        Assert.All(chunks, c => Assert.Equal("text_completion", c["object"]!.GetValue<string>()));
        string text = string.Concat(chunks.Select(c => c["choices"]![0]!["text"]!.GetValue<string>()));
        Assert.Equal(ServingHarness.Reference(ServingHarness.LoraFixture, h.Encode("stream me"), 14), text);
        Assert.NotNull(chunks[^1]["choices"]![0]!["finish_reason"]!.GetValue<string>());
    }

    [Fact]
    public async Task ChatRendersTheSharedFormatStreamingOrNot()
    {
        await using var h = await ServingHarness.Start(WithFixtures);
        var messages = new JsonArray(new JsonObject { ["role"] = "system", ["content"] = "be brief" }, new JsonObject { ["role"] = "user", ["content"] = "hi" });
        string rendered = ChatFormat.Render([("system", "be brief"), ("user", "hi")], addGenerationPrompt: true);
        Assert.Equal("<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\n", rendered);
        string expected = ServingHarness.Reference(ServingHarness.DoraFixture, h.Encode(rendered), 10);

        var (status, body) = await h.Post("v1/chat/completions", new JsonObject { ["model"] = "dora", ["messages"] = messages.DeepClone(), ["max_tokens"] = 10, ["temperature"] = 0 });
        Assert.Equal(200, status);
        Assert.Equal("assistant", body["choices"]![0]!["message"]!["role"]!.GetValue<string>());
        Assert.Equal(expected, body["choices"]![0]!["message"]!["content"]!.GetValue<string>());
        Assert.Equal(h.Encode(rendered).Length, body["usage"]!["prompt_tokens"]!.GetValue<int>());

        var events = await Sse.Read(h.Http, "v1/chat/completions", new JsonObject { ["model"] = "dora", ["messages"] = messages.DeepClone(), ["max_tokens"] = 10, ["temperature"] = 0, ["stream"] = true });
        var chunks = events.SkipLast(1).Select(e => JsonNode.Parse(e)!["choices"]![0]!["delta"]!).ToList();
        Assert.Equal("assistant", chunks[0]["role"]!.GetValue<string>());
        Assert.Equal(expected, string.Concat(chunks.Select(d => d["content"]?.GetValue<string>() ?? "")));
    }

    [Fact]
    public async Task StopStringCutsTheTextAndEndsTheRow()
    {
        await using var h = await ServingHarness.Start(WithFixtures);
        string full = await h.CompletionText("lora", "hello", 20);
        Assert.True(full.Length >= 6, $"need a longer completion to cut: '{full}'");
        string stop = full.Substring(3, 2);
        int cut = full.IndexOf(stop, StringComparison.Ordinal);
        var (status, body) = await h.Post("v1/completions", new JsonObject { ["model"] = "lora", ["prompt"] = "hello", ["max_tokens"] = 20, ["temperature"] = 0, ["stop"] = stop });
        Assert.Equal(200, status);
        Assert.Equal(full[..cut], body["choices"]![0]!["text"]!.GetValue<string>());
        Assert.Equal("stop", body["choices"]![0]!["finish_reason"]!.GetValue<string>());

        // usage counts the tokens up to the one completing the stop string, as PeftModel's own generation does, though
        // the batch worker has decoded further before the row left; streamed (include_usage) or not.
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: ServingHarness.LoraFixture, adapterName: "lora");
        var last = model.GenerateUpdates(h.Encode("hello"), new GenerationOptions { MaxNewTokens = 20, StopSequences = [stop] }).Last();
        Assert.Equal(GenerationFinishReason.Stop, last.FinishReason);
        Assert.True(last.OutputTokens < 20, $"the stop should end generation early ({last.OutputTokens} tokens)");
        Assert.Equal(last.OutputTokens, body["usage"]!["completion_tokens"]!.GetValue<int>());
        Assert.Equal(last.InputTokens, body["usage"]!["prompt_tokens"]!.GetValue<int>());
        var events = await Sse.Read(h.Http, "v1/completions", new JsonObject
        {
            ["model"] = "lora", ["prompt"] = "hello", ["max_tokens"] = 20, ["temperature"] = 0, ["stop"] = stop,
            ["stream"] = true, ["stream_options"] = new JsonObject { ["include_usage"] = true },
        });
        Assert.Equal(last.OutputTokens, JsonNode.Parse(events[^2])!["usage"]!["completion_tokens"]!.GetValue<int>());
    }

    [Fact]
    public async Task SeededSamplingIsReproducible()
    {
        await using var h = await ServingHarness.Start(WithFixtures);
        var req = new JsonObject { ["model"] = "lora", ["prompt"] = "x", ["max_tokens"] = 20, ["temperature"] = 1.0, ["top_p"] = 0.9, ["seed"] = 7 };
        var (_, a) = await h.Post("v1/completions", req);
        var (_, b) = await h.Post("v1/completions", (JsonObject)req.DeepClone());
        Assert.Equal(a["choices"]![0]!["text"]!.GetValue<string>(), b["choices"]![0]!["text"]!.GetValue<string>());
    }

    /// <summary>
    /// A request without top_k samples from the whole vocabulary, as OpenAI and vLLM do (top_k 0), not among
    /// transformers' default 50: seeded texts equal those of an explicit top_k 0 (or vLLM's -1), and top_k 50 gives other texts.
    /// </summary>
    [Fact]
    public async Task SamplingWithoutTopKUsesTheWholeVocabulary()
    {
        await using var h = await ServingHarness.Start(WithFixtures);
        async Task<string> Text(int seed, int? topK)
        {
            var req = new JsonObject { ["model"] = "lora", ["prompt"] = "x", ["max_tokens"] = 12, ["temperature"] = 1.0, ["seed"] = seed };
            if (topK is int k) req["top_k"] = k;
            var (_, body) = await h.Post("v1/completions", req);
            return body["choices"]![0]!["text"]!.GetValue<string>();
        }
        int differsFromTop50 = 0;
        for (int seed = 1; seed <= 6; seed++)
        {
            string absent = await Text(seed, null);
            Assert.Equal(await Text(seed, 0), absent);
            Assert.Equal(await Text(seed, -1), absent);   // vLLM's "all tokens" too
            if (absent != await Text(seed, 50)) differsFromTop50++;
        }
        Assert.True(differsFromTop50 > 0, "top_k 50 changed no text: the comparison cannot tell the defaults apart");
    }

    [Fact]
    public async Task CompletionEqualsTheGenerateCommand()
    {
        var (rc, stdout, _) = CliCapture.Run("generate", "--model", TestPaths.TinyLlama, "--prompt", "peft", "--max-new-tokens", "16", "--adapter", ServingHarness.LoraFixture);
        Assert.Equal(0, rc);
        await using var h = await ServingHarness.Start(WithFixtures);
        Assert.Equal("peft" + await h.CompletionText("lora", "peft", 16) + Environment.NewLine, stdout);
    }
}
