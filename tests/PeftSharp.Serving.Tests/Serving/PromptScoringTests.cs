using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Serving.Hosting;
using PeftSharp.Serving.Scheduling;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// /v1/completions with echo + logprobs (+ max_tokens 0 or 1): the prompt's own log probabilities, the request
/// lm-evaluation-harness's local-completions model (and vLLM's users) score text with.
/// </summary>
public class PromptScoringTests
{
    static readonly int[] Prompt = [5, 17, 42, 99, 3, 250, 77, 8, 8, 131, 64];

    /// <summary>log-softmax of the whole prompt's logits in one forward, computed apart from the server: row i predicts token i+1.</summary>
    static float[][] Reference(int[] prompt, string? adapter = null)
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama, new LoadOptions());
        if (adapter is not null) PeftSharp.Tuners.Lora.PeftAdapterIO.Load(model, adapter, "ref");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var lp = model.Forward(tensor(prompt.Select(i => (long)i).ToArray(), ScalarType.Int64).unsqueeze(0))[0].log_softmax(-1);
        return Enumerable.Range(0, prompt.Length).Select(i => lp[i].data<float>().ToArray()).ToArray();
    }

    /// <summary>The greedy continuation TextGenerator gives with the adapter, up to a stop id.</summary>
    static int[] GreedyIds(int[] prompt, string adapter, int max)
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama, new LoadOptions());
        PeftSharp.Tuners.Lora.PeftAdapterIO.Load(model, adapter, "ref");
        using var tok = TextTokenizer.FromFolder(TestPaths.TinyLlama, model.Config);
        var stop = tok.StopIds(model.Config);
        return PeftSharp.Generation.TextGenerator.Generate(model, prompt, new PeftSharp.Generation.SamplingOptions { MaxNewTokens = max }, stop)
            .TakeWhile(i => !stop.Contains(i)).ToArray();
    }

    static List<float?> TokenLogprobs(JsonObject body, int choice = 0) =>
        body["choices"]![choice]!["logprobs"]!["token_logprobs"]!.AsArray().Select(x => x is null ? (float?)null : x.GetValue<float>()).ToList();

    [Fact]
    public async Task EchoOnlyScoresEveryPromptTokenAsOneForwardDoes()
    {
        await using var h = await ServingHarness.Start();
        // lm-evaluation-harness's shape: the prompt as a list of token-id lists.
        var (status, body) = await h.Post("v1/completions", new JsonObject
        {
            ["prompt"] = new JsonArray(new JsonArray(Prompt.Select(i => (JsonNode?)i).ToArray())), ["max_tokens"] = 0, ["echo"] = true, ["logprobs"] = 2, ["temperature"] = 0,
        });
        Assert.True(status == 200, body.ToJsonString());
        var choice = body["choices"]![0]!;
        Assert.Equal(h.Tokenizer.Decode(Prompt), choice["text"]!.GetValue<string>());
        Assert.Equal("length", choice["finish_reason"]!.GetValue<string>());
        Assert.Equal(0, body["usage"]!["completion_tokens"]!.GetValue<int>());
        Assert.Equal(Prompt.Length, body["usage"]!["prompt_tokens"]!.GetValue<int>());
        var lps = TokenLogprobs((JsonObject)body);
        var top = choice["logprobs"]!["top_logprobs"]!.AsArray();
        Assert.Equal(Prompt.Length, lps.Count);
        Assert.Null(lps[0]);    // nothing before the first token
        Assert.Null(top[0]);
        var want = Reference(Prompt);
        for (int i = 1; i < Prompt.Length; i++)
        {
            Assert.True(Math.Abs(want[i - 1][Prompt[i]] - lps[i]!.Value) < 1e-4, $"token {i}: {lps[i]} vs {want[i - 1][Prompt[i]]}");
            // The top 2 (and the token itself): the two largest of the reference row.
            var best = want[i - 1].Select((v, id) => (v, id)).OrderByDescending(x => x.v).Take(2).Select(x => x.v).ToArray();
            var got = top[i]!.AsObject().Select(kv => kv.Value!.GetValue<float>()).OrderByDescending(v => v).ToArray();
            Assert.True(Math.Abs(best[0] - got[0]) < 1e-4, $"token {i}: top {got[0]} vs {best[0]}");
        }
    }

    [Fact]
    public async Task ScoringAGreedyContinuationIsGreedyAsTheHarnessChecksIt()
    {
        // lm-eval's loglikelihood: echo, max_tokens 1, logprobs 1; it sums token_logprobs[ctxlen:-1] and calls the
        // continuation greedy when each of its tokens' logprob is the max of its top_logprobs. Here the continuation is
        // what the adapter's row generated (greedy), so the scores must say greedy and equal the generation's logprobs.
        await using var h = await ServingHarness.Start(new ServerOptions { Adapters = [("lora", ServingHarness.LoraFixture)] });
        int[] context = Prompt[..5];
        int[] continuation = GreedyIds(context, ServingHarness.LoraFixture, 6);
        var (status, gen) = await h.Post("v1/completions", new JsonObject
        {
            ["model"] = "lora", ["prompt"] = new JsonArray(context.Select(i => (JsonNode?)i).ToArray()), ["max_tokens"] = continuation.Length, ["temperature"] = 0, ["logprobs"] = 1,
        });
        Assert.True(status == 200, gen.ToJsonString());
        var genLps = TokenLogprobs(gen);
        Assert.Equal(continuation.Length, genLps.Count);
        int[] whole = [.. context, .. continuation];
        var (s2, scored) = await h.Post("v1/completions", new JsonObject
        {
            ["model"] = "lora", ["prompt"] = new JsonArray(new JsonArray(whole.Select(i => (JsonNode?)i).ToArray())), ["max_tokens"] = 1, ["echo"] = true, ["logprobs"] = 1, ["temperature"] = 0,
        });
        Assert.True(s2 == 200, scored.ToJsonString());
        var lps = TokenLogprobs(scored);
        Assert.Equal(whole.Length + 1, lps.Count);   // the prompt's tokens, then the one generated
        var tops = scored["choices"]![0]!["logprobs"]!["top_logprobs"]!.AsArray();
        for (int i = context.Length; i < whole.Length; i++)
        {
            Assert.True(Math.Abs(genLps[i - context.Length]!.Value - lps[i]!.Value) < 1e-4, $"token {i}: scored {lps[i]}, generated {genLps[i - context.Length]}");
            Assert.Equal(tops[i]!.AsObject().Max(kv => kv.Value!.GetValue<float>()), lps[i]!.Value);
        }
        // The adapter is on the scoring row: the base scores the same text differently.
        var (_, baseScored) = await h.Post("v1/completions", new JsonObject
        {
            ["prompt"] = new JsonArray(whole.Select(i => (JsonNode?)i).ToArray()), ["max_tokens"] = 0, ["echo"] = true, ["logprobs"] = 0,
        });
        Assert.NotEqual(lps.Take(whole.Length), TokenLogprobs(baseScored));
        var reference = Reference(whole, ServingHarness.LoraFixture);
        for (int i = 1; i < whole.Length; i++) Assert.True(Math.Abs(reference[i - 1][whole[i]] - lps[i]!.Value) < 1e-4, $"token {i}");
    }

    [Fact]
    public void ChunkedScoringEqualsOneForward()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama, new LoadOptions());
        var want = Reference(Prompt);
        foreach (int chunk in new[] { 1, 3, 4, Prompt.Length })
        {
            using var cache = new KvCache(model.Config.NumLayers);
            var got = PromptScorer.Prefill(model, Prompt, 3, cache, chunk, logits => new GeneratedToken((int)logits.argmax().item<long>()), out var first);
            Assert.Equal(Prompt.Length, cache.Length);   // every token fed: the cache continues into generation
            Assert.Equal(want[^1].Select((v, id) => (v, id)).MaxBy(x => x.v).id, first.Id);
            Assert.Equal(Prompt.Length - 1, got.Length);
            for (int i = 0; i < got.Length; i++)
            {
                Assert.Equal(Prompt[i + 1], got[i].Id);
                Assert.True(Math.Abs(want[i][Prompt[i + 1]] - got[i].Logprob) < 1e-4, $"chunk {chunk}, token {i + 1}");
                Assert.Equal(3, got[i].Top!.Length);
            }
        }
    }

    [Fact]
    public async Task SeveralPromptsAreSeveralChoices()
    {
        await using var h = await ServingHarness.Start();
        string a = await h.CompletionText("tiny-llama", "ab cd", 5), b = await h.CompletionText("tiny-llama", "x y z", 5);
        var (status, body) = await h.Post("v1/completions", new JsonObject { ["prompt"] = new JsonArray("ab cd", "x y z"), ["max_tokens"] = 5, ["temperature"] = 0 });
        Assert.True(status == 200, body.ToJsonString());
        var choices = body["choices"]!.AsArray();
        Assert.Equal([0, 1], choices.Select(c => c!["index"]!.GetValue<int>()));
        Assert.Equal([a, b], choices.Select(c => c!["text"]!.GetValue<string>()));
        Assert.Equal(h.Encode("ab cd").Length + h.Encode("x y z").Length, body["usage"]!["prompt_tokens"]!.GetValue<int>());

        // Streamed, as OpenAI and vLLM stream several prompts: each chunk names its choice's index, each choice's chunks
        // concatenate to its non-streamed text and end with one finish_reason, and the usage chunk counts both.
        var events = await Sse.Read(h.Http, "v1/completions", new JsonObject
        {
            ["prompt"] = new JsonArray("ab cd", "x y z"), ["max_tokens"] = 5, ["temperature"] = 0, ["stream"] = true,
            ["stream_options"] = new JsonObject { ["include_usage"] = true },
        });
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events.SkipLast(2).Select(e => JsonNode.Parse(e)!["choices"]!.AsArray().Single()!).ToList();
        Assert.Equal([0, 1], chunks.Select(c => c["index"]!.GetValue<int>()).Distinct().Order());
        foreach (var (index, want) in new[] { (0, a), (1, b) })
        {
            var mine = chunks.Where(c => c["index"]!.GetValue<int>() == index).ToList();
            Assert.Equal(want, string.Concat(mine.Select(c => c["text"]!.GetValue<string>())));
            Assert.Single(mine, c => c["finish_reason"] is not null);
            Assert.NotNull(mine[^1]["finish_reason"]);
        }
        var usage = JsonNode.Parse(events[^2])!["usage"]!;
        Assert.Equal(body["usage"]!["prompt_tokens"]!.GetValue<int>(), usage["prompt_tokens"]!.GetValue<int>());
        Assert.Equal(body["usage"]!["completion_tokens"]!.GetValue<int>(), usage["completion_tokens"]!.GetValue<int>());
        var (s3, err3) = await h.Post("v1/completions", new JsonObject { ["prompt"] = "ab", ["max_tokens"] = 0 });
        Assert.Equal(400, s3);
        Assert.Contains("0 only with 'echo'", err3["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task StreamedEchoCarriesThePromptLogprobsFirst()
    {
        await using var h = await ServingHarness.Start();
        var events = await Sse.Read(h.Http, "v1/completions", new JsonObject
        {
            ["prompt"] = new JsonArray(Prompt.Select(i => (JsonNode?)i).ToArray()), ["max_tokens"] = 3, ["echo"] = true, ["logprobs"] = 0, ["temperature"] = 0, ["stream"] = true,
        });
        var first = JsonNode.Parse(events[0])!["choices"]![0]!;
        Assert.Equal(h.Tokenizer.Decode(Prompt), first["text"]!.GetValue<string>());
        var lps = first["logprobs"]!["token_logprobs"]!.AsArray();
        Assert.Equal(Prompt.Length, lps.Count);
        Assert.Null(lps[0]);
        var want = Reference(Prompt);
        Assert.True(Math.Abs(want[Prompt.Length - 2][Prompt[^1]] - lps[^1]!.GetValue<float>()) < 1e-4);
        // The scored prefill's cache carries on into generation: the same text as a plain completion of the prompt.
        var (_, plain) = await h.Post("v1/completions", new JsonObject { ["prompt"] = new JsonArray(Prompt.Select(i => (JsonNode?)i).ToArray()), ["max_tokens"] = 3, ["temperature"] = 0 });
        Assert.Equal(h.Tokenizer.Decode(Prompt) + plain["choices"]![0]!["text"]!.GetValue<string>(),
            string.Concat(events.SkipLast(1).Select(e => JsonNode.Parse(e)!["choices"]![0]!["text"]!.GetValue<string>())));
    }
}
