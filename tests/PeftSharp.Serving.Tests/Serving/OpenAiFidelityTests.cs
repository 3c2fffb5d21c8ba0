using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Serving.Hosting;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Serving;

/// <summary>Response shapes and error fields as OpenAI's API reference and SDK types define them (raw HTTP).</summary>
public class OpenAiFidelityTests
{
    static ServerOptions WithLora => new() { Adapters = [("lora", ServingHarness.LoraFixture)] };
    static JsonObject Error(JsonObject body) => (JsonObject)body["error"]!;
    static string? Str(JsonNode? n) => n?.GetValue<string>();

    /// <summary>log-softmax of the base model's next-token logits after <paramref name="prompt"/>, computed apart from the server.</summary>
    static float[] ReferenceLogprobs(int[] prompt)
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama, new LoadOptions());
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var logits = model.Forward(tensor(prompt.Select(i => (long)i).ToArray(), ScalarType.Int64).unsqueeze(0));
        return logits[0, -1].log_softmax(-1).data<float>().ToArray();
    }

    [Fact]
    public async Task RetrieveModelById()
    {
        await using var h = await ServingHarness.Start(WithLora);
        var base_ = JsonNode.Parse(await h.Http.GetStringAsync("v1/models/tiny-llama"))!;
        Assert.Equal("tiny-llama", Str(base_["id"]));
        Assert.Equal("model", Str(base_["object"]));
        var lora = JsonNode.Parse(await h.Http.GetStringAsync("v1/models/lora"))!;
        Assert.Equal("lora", Str(lora["id"]));
        Assert.Equal("tiny-llama", Str(lora["parent"]));
        using var missing = await h.Http.GetAsync("v1/models/nope");
        Assert.Equal(404, (int)missing.StatusCode);
        var err = Error((JsonObject)JsonNode.Parse(await missing.Content.ReadAsStringAsync())!);
        Assert.Equal("model_not_found", Str(err["code"]));
    }

    [Fact]
    public async Task CompletionLogprobsAreTheModelsTopN()
    {
        await using var h = await ServingHarness.Start();
        var (status, body) = await h.Post("v1/completions", new JsonObject { ["prompt"] = "hello", ["max_tokens"] = 6, ["temperature"] = 0, ["logprobs"] = 3 });
        Assert.Equal(200, status);
        var lp = body["choices"]![0]!["logprobs"]!;
        var tokens = lp["tokens"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
        Assert.Equal(body["usage"]!["completion_tokens"]!.GetValue<int>(), tokens.Count);
        // Each offset is where the token's text starts in the text. (A byte token of a multi-byte character reads as
        // U+FFFD, so the tokens need not concatenate to the text: it is placed at the character it is part of.)
        string text = body["choices"]![0]!["text"]!.GetValue<string>();
        var offsets = lp["text_offset"]!.AsArray().Select(o => o!.GetValue<int>()).ToList();
        Assert.Equal(0, offsets[0]);
        for (int i = 0; i < offsets.Count; i++)
        {
            Assert.InRange(offsets[i], i == 0 ? 0 : offsets[i - 1], text.Length);
            if (!tokens[i].Contains('\uFFFD')) Assert.StartsWith(tokens[i], text[offsets[i]..]);
        }

        // The first token's numbers equal the model's own distribution (greedy: the chosen token is the top one).
        float[] reference = ReferenceLogprobs(h.Encode("hello"));
        var top3 = reference.Select((v, id) => (v, id)).OrderByDescending(x => x.v).Take(3).ToList();
        Assert.Equal(top3[0].v, lp["token_logprobs"]![0]!.GetValue<float>(), 1e-4f);
        var firstTop = lp["top_logprobs"]![0]!.AsObject();
        Assert.InRange(firstTop.Count, 1, 4);   // top 3 and the chosen token, by text
        foreach (var (v, id) in top3)
            Assert.Equal(v, firstTop[h.Tokenizer.Decode([id])]!.GetValue<float>(), 1e-4f);
        Assert.All(lp["token_logprobs"]!.AsArray(), v => Assert.True(v!.GetValue<float>() <= 0));
    }

    [Fact]
    public async Task ChatLogprobsHaveOpenAisShapeStreamingOrNot()
    {
        await using var h = await ServingHarness.Start(WithLora);
        var req = new JsonObject
        {
            ["model"] = "lora", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }),
            ["max_tokens"] = 5, ["temperature"] = 0, ["logprobs"] = true, ["top_logprobs"] = 2,
        };
        var (status, body) = await h.Post("v1/chat/completions", (JsonObject)req.DeepClone());
        Assert.Equal(200, status);
        var content = body["choices"]![0]!["logprobs"]!["content"]!.AsArray();
        Assert.Equal(body["usage"]!["completion_tokens"]!.GetValue<int>(), content.Count);
        foreach (var entry in content)
        {
            var top = entry!["top_logprobs"]!.AsArray();
            Assert.Equal(2, top.Count);
            Assert.True(top[0]!["logprob"]!.GetValue<float>() >= top[1]!["logprob"]!.GetValue<float>());
            Assert.Equal(top[0]!["logprob"]!.GetValue<float>(), entry["logprob"]!.GetValue<float>(), 1e-5f);   // greedy
        }
        Assert.Null(body["choices"]![0]!["logprobs"]!["refusal"]);
        // bytes: each token's own raw bytes, so joined they read as the reply (the random fixture's stray byte tokens are
        // invalid UTF-8, U+FFFD in the reply as in the bytes read leniently; LogprobBytesTests: split characters).
        static byte[] Bytes(JsonNode? entry) => entry!["bytes"]!.AsArray().Select(b => (byte)b!.GetValue<int>()).ToArray();
        Assert.Equal(body["choices"]![0]!["message"]!["content"]!.GetValue<string>(), Encoding.UTF8.GetString(content.SelectMany(Bytes).ToArray()));

        req["stream"] = true;
        var events = await Sse.Read(h.Http, "v1/chat/completions", req);
        var streamed = events.SkipLast(1).SelectMany(e => JsonNode.Parse(e)!["choices"]![0]!["logprobs"]?["content"]?.AsArray() ?? []).ToList();
        Assert.Equal(content.Select(c => c!["token"]!.GetValue<string>()), streamed.Select(c => c!["token"]!.GetValue<string>()));
        Assert.Equal(content.Select(Bytes), streamed.Select(Bytes));

        // Without logprobs, the field is null (present, as OpenAI sends it).
        req.Remove("stream"); req.Remove("logprobs"); req.Remove("top_logprobs");
        (_, body) = await h.Post("v1/chat/completions", req);
        Assert.True(body["choices"]![0]!.AsObject().ContainsKey("logprobs"));
        Assert.Null(body["choices"]![0]!["logprobs"]);
    }

    [Fact]
    public async Task EchoSendsThePromptBack()
    {
        await using var h = await ServingHarness.Start();
        string completion = await h.CompletionText("tiny-llama", "echo this", 5);
        var (_, body) = await h.Post("v1/completions", new JsonObject { ["prompt"] = "echo this", ["max_tokens"] = 5, ["temperature"] = 0, ["echo"] = true });
        Assert.Equal("echo this" + completion, body["choices"]![0]!["text"]!.GetValue<string>());
        var events = await Sse.Read(h.Http, "v1/completions", new JsonObject { ["prompt"] = "echo this", ["max_tokens"] = 5, ["temperature"] = 0, ["echo"] = true, ["stream"] = true });
        Assert.Equal("echo this" + completion, string.Concat(events.SkipLast(1).Select(e => JsonNode.Parse(e)!["choices"]![0]!["text"]!.GetValue<string>())));
    }

    [Theory]
    [InlineData("v1/completions")]
    [InlineData("v1/chat/completions")]
    public async Task IncludeUsageEndsTheStreamWithAUsageChunk(string path)
    {
        await using var h = await ServingHarness.Start();
        var req = new JsonObject { ["max_tokens"] = 4, ["temperature"] = 0, ["stream"] = true, ["stream_options"] = new JsonObject { ["include_usage"] = true } };
        if (path.Contains("chat")) req["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "count" });
        else req["prompt"] = "count";
        var events = await Sse.Read(h.Http, path, req);
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events.SkipLast(1).Select(e => JsonNode.Parse(e)!.AsObject()).ToList();
        var last = chunks[^1];
        Assert.Empty(last["choices"]!.AsArray());
        Assert.Equal(4, last["usage"]!["completion_tokens"]!.GetValue<int>());
        Assert.True(last["usage"]!["prompt_tokens"]!.GetValue<int>() > 0);
        Assert.All(chunks.SkipLast(1), c => { Assert.True(c.ContainsKey("usage")); Assert.Null(c["usage"]); });
        // Without it, no chunk carries usage.
        req.Remove("stream_options");
        Assert.All((await Sse.Read(h.Http, path, req)).SkipLast(1), e => Assert.False(JsonNode.Parse(e)!.AsObject().ContainsKey("usage")));
    }

    [Fact]
    public async Task ToolCallHistoryIsAcceptedAndToolsAreRefusedNotIgnored()
    {
        await using var h = await ServingHarness.Start();
        var history = new JsonArray(
            new JsonObject { ["role"] = "user", ["content"] = "weather?" },
            new JsonObject
            {
                ["role"] = "assistant", ["content"] = null,
                ["tool_calls"] = new JsonArray(new JsonObject
                {
                    ["id"] = "call_1", ["type"] = "function", ["function"] = new JsonObject { ["name"] = "weather", ["arguments"] = "{}" },
                }),
            },
            new JsonObject { ["role"] = "tool", ["tool_call_id"] = "call_1", ["content"] = "sunny" });
        var (status, body) = await h.Post("v1/chat/completions", new JsonObject { ["messages"] = history.DeepClone(), ["max_tokens"] = 3 });
        Assert.True(status == 200, body.ToJsonString());

        var tool = new JsonArray(new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = "weather", ["parameters"] = new JsonObject() } });
        foreach (var (field, value) in new (string, JsonNode)[]
        {
            ("tools", tool), ("tool_choice", "required"), ("response_format", new JsonObject { ["type"] = "json_object" }),
            ("logit_bias", new JsonObject { ["5"] = 10 }), ("presence_penalty", 0.5), ("frequency_penalty", 1),
        })
        {
            (status, body) = await h.Post("v1/chat/completions", new JsonObject { ["messages"] = history.DeepClone(), [field] = value.DeepClone() });
            Assert.True(status == 400, $"{field}: {status}");
            Assert.Equal(field, Str(Error(body)["param"]));
            Assert.Equal("unsupported_parameter", Str(Error(body)["code"]));
        }
        // The neutral values OpenAI documents as defaults are accepted.
        (status, _) = await h.Post("v1/chat/completions", new JsonObject
        {
            ["messages"] = history.DeepClone(), ["max_tokens"] = 2, ["response_format"] = new JsonObject { ["type"] = "text" },
            ["presence_penalty"] = 0, ["tools"] = new JsonArray(), ["tool_choice"] = "none",
        });
        Assert.Equal(200, status);
        (status, body) = await h.Post("v1/completions", new JsonObject { ["prompt"] = "x", ["suffix"] = "y" });
        Assert.Equal("suffix", Str(Error(body)["param"]));
    }

    [Fact]
    public async Task ErrorCodesAndParamsAreOpenAis()
    {
        await using var h = await ServingHarness.Start(new ServerOptions { ApiKey = "k3y" });
        var (status, body) = await h.Post("v1/completions", new JsonObject { ["prompt"] = "x" });
        Assert.Equal(401, status);
        Assert.Equal("invalid_request_error", Str(Error(body)["type"]));
        h.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "wrong");
        (status, body) = await h.Post("v1/completions", new JsonObject { ["prompt"] = "x" });
        Assert.Equal(401, status);
        Assert.Equal("invalid_api_key", Str(Error(body)["code"]));
        // The scheme is case-insensitive (RFC 9110), as OpenAI accepts it.
        foreach (string scheme in new[] { "bearer", "BEARER", "Bearer" })
        {
            h.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue(scheme, "k3y");
            Assert.Equal(200, (await h.Post("v1/completions", new JsonObject { ["prompt"] = "x", ["max_tokens"] = 1 })).Status);
        }
        (status, body) = await h.Post("v1/completions", new JsonObject { ["model"] = "nope", ["prompt"] = "x" });
        Assert.Equal(404, status);
        Assert.Equal("model_not_found", Str(Error(body)["code"]));
        Assert.Equal("model", Str(Error(body)["param"]));
        (status, body) = await h.Post("v1/completions", new JsonObject { ["prompt"] = new JsonArray(Enumerable.Range(0, 128).Select(i => (JsonNode?)5).ToArray()) });
        Assert.Equal(400, status);
        Assert.Equal("context_length_exceeded", Str(Error(body)["code"]));
        Assert.Equal("prompt", Str(Error(body)["param"]));
    }

    [Fact]
    public async Task BusyAnswersCarryRetryAfter()
    {
        // 503: one resident adapter slot, leased by a queued request, and a request for the evicted other adapter.
        string a = ServingHarness.SavedAdapter(Path.Combine(TestPaths.TempDir(), "a"), seed: 1);
        string b = ServingHarness.SavedAdapter(Path.Combine(TestPaths.TempDir(), "b"), seed: 2);
        await using var h = await ServingHarness.Start(new ServerOptions { MaxAdapters = 1, MaxQueue = 1, Adapters = [("a", a), ("b", b)] });
        var gate = h.HoldWorker();
        Task<string> first;
        try
        {
            first = h.CompletionText("b", "hold", 2);
            await ServingHarness.WaitUntil(() => h.Server.State.Scheduler.QueuedJobs == 1, "the first request to queue");
            using (var busy = await h.Http.PostAsync("v1/completions", new StringContent("{\"model\":\"a\",\"prompt\":\"x\"}", Encoding.UTF8, "application/json")))
            {
                Assert.Equal(503, (int)busy.StatusCode);
                Assert.Equal("1", busy.Headers.GetValues("Retry-After").Single());
            }
            using (var full = await h.Http.PostAsync("v1/completions", new StringContent("{\"prompt\":\"x\"}", Encoding.UTF8, "application/json")))
            {
                Assert.Equal(429, (int)full.StatusCode);
                Assert.Equal("1", full.Headers.GetValues("Retry-After").Single());
            }
        }
        finally { gate.Release(); }   // a failed assert must not leave the worker held: disposing would wait for it forever
        Assert.NotNull(await first);
    }

    [Fact]
    public async Task ModelsShowsTheBaseFingerprintThatAdaptersTrainedOnItRecord()
    {
        // all-linear, as `peft train` targets by default; the fixture's untied lm_head is not among the targets.
        string saved = ServingHarness.SavedAdapter(Path.Combine(TestPaths.TempDir(), "mine"), seed: 3);
        string recorded = JsonNode.Parse(File.ReadAllText(Path.Combine(saved, "peftsharp_adapter.json")))!["base_fingerprint"]!["digest"]!.GetValue<string>();
        await using var h = await ServingHarness.Start(new ServerOptions { Adapters = [("mine", saved)] });
        var data = JsonNode.Parse(await h.Http.GetStringAsync("v1/models"))!["data"]!.AsArray();
        Assert.Equal(recorded, Str(data[0]!["base_fingerprint"]));
        Assert.Equal(recorded, Str(data[1]!["base_fingerprint"]));
    }

    [Theory]
    [InlineData(32, 2, 48, "has shape")]                        // narrower base
    [InlineData(64, 3, 176, "which the served base does not have")]   // deeper base
    public async Task AnAdapterWithoutAFingerprintMadeForAnotherBaseIs409(int hidden, int layers, int intermediate, string reason)
    {
        string root = TestPaths.TempDir();
        string otherBase = RandomModel.Write(RandomModel.LlamaConfig(hidden: hidden, layers: layers, heads: 4, kvHeads: 2, vocab: 260, intermediate: intermediate), seed: 9);
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(otherBase, "tokenizer.json"));
        string dir = ServingHarness.SavedAdapter(Path.Combine(root, "other"), seed: 1, baseDir: otherBase);
        // As Python PEFT writes adapters: no recorded fingerprint, so only the tensors' shapes tell.
        File.Delete(Path.Combine(dir, AdapterFolderFiles.SidecarFile));
        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root });
        var (status, body) = await h.Post("v1/adapters", new JsonObject { ["name"] = "other", ["path"] = "other" });
        Assert.Equal(409, status);
        Assert.Contains(reason, Str(Error(body)["message"]));
        Assert.Empty(PeftSharp.Tuners.Lora.LoraModel.Of(h.Model).Adapters);
    }
}
