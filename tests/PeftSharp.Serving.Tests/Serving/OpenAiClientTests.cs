// Seed is marked experimental in the OpenAI .NET SDK.
#pragma warning disable OPENAI001
using System.ClientModel;
using System.Text.Json.Nodes;
using OpenAI;
using OpenAI.Chat;
using PeftSharp.Serving.Hosting;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// `peft serve` through the official OpenAI .NET client (NuGet OpenAI 2.15.0), as an application would call it:
/// chat, streaming, stops, seeds, logprobs, models, legacy completions and the errors it raises.
/// </summary>
public class OpenAiClientTests
{
    const string Key = "sk-test-key";
    static ServerOptions Options => new() { ApiKey = Key, Adapters = [("lora", ServingHarness.LoraFixture)] };

    static OpenAIClientOptions ClientOptions(ServingHarness h) => new()
    {
        Endpoint = new Uri(h.Server.BaseAddress, "v1"),
        NetworkTimeout = TimeSpan.FromSeconds(60),
        RetryPolicy = new System.ClientModel.Primitives.ClientRetryPolicy(maxRetries: 0),   // errors must surface as sent
    };

    static OpenAIClient Client(ServingHarness h, string key = Key) => new(new ApiKeyCredential(key), ClientOptions(h));

    static List<ChatMessage> Hi => [new SystemChatMessage("be brief"), new UserChatMessage("hi")];

    /// <summary>The same chat request over raw HTTP: what the client must have parsed.</summary>
    static async Task<JsonObject> RawChat(ServingHarness h, JsonObject extra)
    {
        h.Http.DefaultRequestHeaders.Authorization = new("Bearer", Key);
        var body = new JsonObject
        {
            ["model"] = "lora",
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "system", ["content"] = "be brief" }, new JsonObject { ["role"] = "user", ["content"] = "hi" }),
        };
        foreach (var (k, v) in extra) body[k] = v?.DeepClone();
        var (status, json) = await h.Post("v1/chat/completions", body);
        Assert.Equal(200, status);
        return json;
    }

    [Fact]
    public async Task ChatCompletionParsesAsTheServerAnswered()
    {
        await using var h = await ServingHarness.Start(Options);
        var chat = Client(h).GetChatClient("lora");
        ChatCompletion c = await chat.CompleteChatAsync(Hi, new ChatCompletionOptions { MaxOutputTokenCount = 8, Temperature = 0 });
        var raw = await RawChat(h, new JsonObject { ["max_completion_tokens"] = 8, ["temperature"] = 0 });
        Assert.Equal(raw["choices"]![0]!["message"]!["content"]!.GetValue<string>(), c.Content.Single().Text);
        Assert.Equal(ChatMessageRole.Assistant, c.Role);
        Assert.Equal("lora", c.Model);
        Assert.StartsWith("chatcmpl-", c.Id);
        Assert.Equal(raw["usage"]!["completion_tokens"]!.GetValue<int>(), c.Usage.OutputTokenCount);
        Assert.Equal(raw["usage"]!["prompt_tokens"]!.GetValue<int>(), c.Usage.InputTokenCount);
        Assert.Equal(c.Usage.OutputTokenCount == 8 ? ChatFinishReason.Length : ChatFinishReason.Stop, c.FinishReason);
    }

    [Fact]
    public async Task StreamingGivesTheSameTextAndTheUsage()
    {
        await using var h = await ServingHarness.Start(Options);
        var chat = Client(h).GetChatClient("lora");
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 10, Temperature = 0 };
        ChatCompletion whole = await chat.CompleteChatAsync(Hi, options);
        var text = new System.Text.StringBuilder();
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        await foreach (var update in chat.CompleteChatStreamingAsync(Hi, options))
        {
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            usage ??= update.Usage;
            finish ??= update.FinishReason;
        }
        Assert.Equal(whole.Content.Single().Text, text.ToString());
        Assert.Equal(whole.FinishReason, finish);
        // The SDK asks for stream_options.include_usage; the usage chunk must parse.
        Assert.NotNull(usage);
        Assert.Equal(whole.Usage.OutputTokenCount, usage!.OutputTokenCount);
    }

    [Fact]
    public async Task StopSequencesAndSeedsBehave()
    {
        await using var h = await ServingHarness.Start(Options);
        var chat = Client(h).GetChatClient("lora");
        string full = (await chat.CompleteChatAsync(Hi, new ChatCompletionOptions { MaxOutputTokenCount = 20, Temperature = 0 })).Value.Content.Single().Text;
        Assert.True(full.Length >= 6, $"need a longer completion to cut: '{full}'");
        string stop = full.Substring(3, 2);
        var stopped = (await chat.CompleteChatAsync(Hi, new ChatCompletionOptions { MaxOutputTokenCount = 20, Temperature = 0, StopSequences = { stop } })).Value;
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], stopped.Content.Single().Text);
        Assert.Equal(ChatFinishReason.Stop, stopped.FinishReason);

        var seeded = new ChatCompletionOptions { MaxOutputTokenCount = 16, Temperature = 1f, TopP = 0.9f, Seed = 11 };
        string a = (await chat.CompleteChatAsync(Hi, seeded)).Value.Content.Single().Text;
        string b = (await chat.CompleteChatAsync(Hi, seeded)).Value.Content.Single().Text;
        Assert.Equal(a, b);
    }

    [Fact]
    public async Task LogprobsParse()
    {
        await using var h = await ServingHarness.Start(Options);
        var chat = Client(h).GetChatClient("lora");
        ChatCompletion c = await chat.CompleteChatAsync(Hi, new ChatCompletionOptions
        {
            MaxOutputTokenCount = 6, Temperature = 0, IncludeLogProbabilities = true, TopLogProbabilityCount = 3,
        });
        Assert.Equal(c.Usage.OutputTokenCount, c.ContentTokenLogProbabilities.Count);
        foreach (var t in c.ContentTokenLogProbabilities)
        {
            Assert.True(t.LogProbability <= 0);
            Assert.Equal(3, t.TopLogProbabilities.Count);
            Assert.Equal(t.TopLogProbabilities[0].LogProbability, t.LogProbability, 1e-5f);   // greedy picks the likeliest
        }
        // Each token's bytes are its own raw bytes: joined, they read as the reply (the random fixture's stray byte
        // tokens are invalid UTF-8, U+FFFD in the reply as in the bytes read leniently; LogprobBytesTests: valid text).
        Assert.Equal(c.Content.Single().Text, System.Text.Encoding.UTF8.GetString(c.ContentTokenLogProbabilities.SelectMany(t => t.Utf8Bytes!.Value.ToArray()).ToArray()));
    }

    [Fact]
    public async Task ModelsAndLegacyCompletions()
    {
        await using var h = await ServingHarness.Start(Options);
        var models = Client(h).GetOpenAIModelClient();
        Assert.Equal(["tiny-llama", "lora"], (await models.GetModelsAsync()).Value.Select(m => m.Id));
        var lora = (await models.GetModelAsync("lora")).Value;
        Assert.Equal("lora", lora.Id);
        Assert.Equal("peftsharp", lora.OwnedBy);

        // The SDK's legacy completions client is internal in 2.15; its pipeline (auth, errors) sends the request.
        var pipeline = Client(h).GetChatClient("lora").Pipeline;
        using var message = pipeline.CreateMessage();
        message.Request.Method = "POST";
        message.Request.Uri = new Uri(h.Server.BaseAddress, "v1/completions");
        message.Request.Headers.Set("Content-Type", "application/json");
        message.Request.Content = BinaryContent.Create(BinaryData.FromString(new JsonObject
        {
            ["model"] = "lora", ["prompt"] = "hello world", ["max_tokens"] = 7, ["temperature"] = 0, ["logprobs"] = 2,
        }.ToJsonString()));
        await pipeline.SendAsync(message);
        Assert.Equal(200, message.Response!.Status);
        var body = JsonNode.Parse(message.Response.Content.ToString())!;
        h.Http.DefaultRequestHeaders.Authorization = new("Bearer", Key);
        Assert.Equal(await h.CompletionText("lora", "hello world", 7), body["choices"]![0]!["text"]!.GetValue<string>());
        Assert.Equal(7, body["choices"]![0]!["logprobs"]!["tokens"]!.AsArray().Count);
    }

    [Fact]
    public async Task ErrorsSurfaceWithTheirStatusAndMessage()
    {
        await using var h = await ServingHarness.Start(Options);
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 2 };

        var e = await Assert.ThrowsAsync<ClientResultException>(() => Client(h).GetChatClient("nope").CompleteChatAsync(Hi, options));
        Assert.Equal(404, e.Status);
        Assert.Contains("model 'nope' not found", e.Message);
        Assert.Contains("model_not_found", e.Message);

        e = await Assert.ThrowsAsync<ClientResultException>(() => Client(h, "sk-wrong").GetChatClient("lora").CompleteChatAsync(Hi, options));
        Assert.Equal(401, e.Status);
        Assert.Contains("invalid_api_key", e.Message);

        e = await Assert.ThrowsAsync<ClientResultException>(() => Client(h).GetChatClient("lora").CompleteChatAsync(Hi, new ChatCompletionOptions { MaxOutputTokenCount = 100_000 }));
        Assert.Equal(400, e.Status);
        Assert.Contains("context_length_exceeded", e.Message);

        var withTools = new ChatCompletionOptions { Tools = { ChatTool.CreateFunctionTool("weather", "the weather") } };
        e = await Assert.ThrowsAsync<ClientResultException>(() => Client(h).GetChatClient("lora").CompleteChatAsync(Hi, withTools));
        Assert.Equal(400, e.Status);
        Assert.Contains("tool and function calling is not supported", e.Message);

        // A tool-call turn from an earlier exchange in the history is fine.
        var history = new List<ChatMessage>(Hi)
        {
            new AssistantChatMessage([ChatToolCall.CreateFunctionToolCall("call_1", "weather", BinaryData.FromString("{}"))]),
            new ToolChatMessage("call_1", "sunny"),
        };
        Assert.NotNull((await Client(h).GetChatClient("lora").CompleteChatAsync(history, options)).Value.Content);
    }
}
