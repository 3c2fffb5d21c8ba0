using System.ClientModel;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using OpenAI;
using PeftSharp.Serving.Hosting;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// `peft serve` driven by the official OpenAI .NET client as Microsoft.Extensions.AI's <see cref="IChatClient"/>
/// (Microsoft.Extensions.AI.OpenAI's <c>AsIChatClient()</c>), as an app written against the abstraction calls it:
/// its answers equal the server's own greedy output, and PeftModel's own <c>AsChatClient()</c> on the same
/// model and adapter answers the same, so both directions go through real clients.
/// </summary>
public class ExtensionsAiClientTests
{
    static ServerOptions Options => new() { Adapters = [("lora", ServingHarness.LoraFixture)] };

    static IChatClient OpenAiChat(ServingHarness h, string model) =>
        new OpenAIClient(new ApiKeyCredential("unused"), new OpenAIClientOptions
        {
            Endpoint = new Uri(h.Server.BaseAddress, "v1"),
            NetworkTimeout = TimeSpan.FromSeconds(60),
            RetryPolicy = new System.ClientModel.Primitives.ClientRetryPolicy(maxRetries: 0),
        }).GetChatClient(model).AsIChatClient();

    static readonly ChatMessage[] Conversation = [new(ChatRole.System, "be brief"), new(ChatRole.User, "code red fox")];

    /// <summary>The server's own greedy answer over raw HTTP.</summary>
    static async Task<string> ServerGreedy(ServingHarness h, int maxTokens)
    {
        var (status, json) = await h.Post("v1/chat/completions", new JsonObject
        {
            ["model"] = "lora", ["max_tokens"] = maxTokens, ["temperature"] = 0,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "system", ["content"] = "be brief" }, new JsonObject { ["role"] = "user", ["content"] = "code red fox" }),
        });
        Assert.Equal(200, status);
        return json["choices"]![0]!["message"]!["content"]!.GetValue<string>();
    }

    [Fact]
    public async Task NonStreamingAndStreamingAnswersEqualTheServersGreedyOutput()
    {
        await using var h = await ServingHarness.Start(Options);
        IChatClient chat = OpenAiChat(h, "lora");
        var options = new ChatOptions { MaxOutputTokens = 12, Temperature = 0 };
        string expected = await ServerGreedy(h, 12);
        Assert.NotEmpty(expected);

        ChatResponse response = await chat.GetResponseAsync(Conversation, options);
        Assert.Equal(expected, response.Text);
        Assert.Equal("lora", response.ModelId);

        var streamed = new System.Text.StringBuilder();
        int pieces = 0;
        await foreach (var update in chat.GetStreamingResponseAsync(Conversation, options))
        {
            streamed.Append(update.Text);
            if (update.Text.Length > 0) pieces++;
        }
        Assert.Equal(expected, streamed.ToString());
        Assert.True(pieces > 1, "the answer should stream in several updates");

        // PeftModel's own IChatClient on the same base and adapter gives the same answer, finish reason and usage.
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: ServingHarness.LoraFixture, adapterName: "lora");
        var local = await model.AsChatClient().GetResponseAsync(Conversation, options);
        Assert.Equal(expected, local.Text);
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);
        Assert.Equal(response.FinishReason, local.FinishReason);
        Assert.Equal(12, response.Usage?.OutputTokenCount);
        Assert.Equal(response.Usage?.InputTokenCount, local.Usage?.InputTokenCount);
        Assert.Equal(response.Usage?.OutputTokenCount, local.Usage?.OutputTokenCount);
        Assert.Equal(response.Usage?.TotalTokenCount, local.Usage?.TotalTokenCount);

        // A stop sequence ends both with Stop.
        string stop = expected.Substring(expected.Length / 2, Math.Min(2, expected.Length - expected.Length / 2));
        var stopOptions = new ChatOptions { MaxOutputTokens = 12, Temperature = 0, StopSequences = [stop] };
        var served = await chat.GetResponseAsync(Conversation, stopOptions);
        var own = await model.AsChatClient().GetResponseAsync(Conversation, stopOptions);
        Assert.Equal(own.Text, served.Text);
        Assert.Equal(ChatFinishReason.Stop, served.FinishReason);
        Assert.Equal(ChatFinishReason.Stop, own.FinishReason);
        // Both count the tokens up to the one completing the stop (the server's worker has decoded further by then).
        Assert.True(own.Usage?.OutputTokenCount < 12, $"the stop should end generation early ({own.Usage?.OutputTokenCount} tokens)");
        Assert.Equal(own.Usage?.OutputTokenCount, served.Usage?.OutputTokenCount);
        Assert.Equal(own.Usage?.TotalTokenCount, served.Usage?.TotalTokenCount);
        ChatResponse streamedStop = await chat.GetStreamingResponseAsync(Conversation, stopOptions).ToChatResponseAsync();
        Assert.Equal(own.Text, streamedStop.Text);
        Assert.Equal(own.Usage?.OutputTokenCount, streamedStop.Usage?.OutputTokenCount);
    }
}
