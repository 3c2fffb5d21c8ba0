using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using PeftSharp.Generation;
using PeftSharp.Serving.Hosting;
using PeftSharp.Serving.Scheduling;

namespace PeftSharp.Tests.Serving;

/// <summary>Request sizes near int.MaxValue, text that is not text, and what the operator sees when the server fails.</summary>
public class ServerLimitsTests
{
    static async Task<(int Status, JsonObject Body)> Raw(ServingHarness h, string path, string body)
    {
        using var resp = await h.Http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
        return ((int)resp.StatusCode, (JsonObject)JsonNode.Parse(await resp.Content.ReadAsStringAsync())!);
    }

    [Fact]
    public async Task MaxTokensNearIntMaxValueIsContextLengthExceededNotAnOverflow()
    {
        await using var h = await ServingHarness.Start();
        // prompt + max_tokens wrapped around to a negative int and passed the context check before.
        foreach (long maxTokens in new[] { 2147483643L, 2147483645L, 2147483647L })
        foreach (var (path, field) in new[] { ("v1/completions", "\"prompt\":\"hello\""), ("v1/chat/completions", "\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]") })
        {
            var (status, body) = await Raw(h, path, $"{{{field},\"max_tokens\":{maxTokens}}}");
            Assert.True(status == 400, $"{path} max_tokens {maxTokens}: {status} {body.ToJsonString()}");
            Assert.Equal("context_length_exceeded", body["error"]!["code"]!.GetValue<string>());
            Assert.Equal("max_tokens", body["error"]!["param"]!.GetValue<string>());
            Assert.Contains("exceeds the model's context of 128", body["error"]!["message"]!.GetValue<string>());
        }
        Assert.Equal(0, h.Server.State.Scheduler.TokensGenerated);
    }

    [Fact]
    public async Task ARowNeverOutgrowsTheContextWhateverItsMaxTokens()
    {
        // The scheduler's own invariant, beneath the endpoint's check: a job asking for int.MaxValue tokens after a
        // 120-token prompt on a 128-token model gets the 8 tokens left, and ends with "length".
        await using var h = await ServingHarness.Start();
        int context = h.Model.Config.MaxPositionEmbeddings;
        int[] prompt = Enumerable.Range(0, context - 8).Select(i => 3 + i % 200).ToArray();
        var job = new GenerationJob(prompt, new SamplingOptions { MaxNewTokens = int.MaxValue, Temperature = 0 }, stopIds: [], adapter: null, CancellationToken.None);
        Assert.True(h.Server.State.Scheduler.TryEnqueue(job));
        int received = 0;
        await foreach (var _ in job.Tokens.ReadAllAsync())
            if (++received > 64) break;   // bounded: before the fix the row decoded for as long as anyone listened
        Assert.Equal(8, received);
        Assert.Equal("length", job.FinishReason);

        // A prompt that fills the context is refused by the scheduler itself, not decoded.
        var full = new GenerationJob(Enumerable.Range(0, context).Select(i => 3 + i % 200).ToArray(), new SamplingOptions { MaxNewTokens = 1 }, [], null, CancellationToken.None);
        Assert.True(h.Server.State.Scheduler.TryEnqueue(full));
        var e = await Assert.ThrowsAsync<ArgumentException>(async () => { await foreach (var _ in full.Tokens.ReadAllAsync()) { } });
        Assert.Contains("context is 128", e.Message);
    }

    [Theory]
    [InlineData("v1/completions", "{\"prompt\":\"\\ud800\"}", "$.prompt")]
    [InlineData("v1/completions", "{\"prompt\":\"ok\",\"stop\":[\"a\\udc00b\"]}", "$.stop[0]")]
    [InlineData("v1/completions", "{\"model\":\"\\ud800\",\"prompt\":\"ok\"}", "$.model")]
    [InlineData("v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\\ud800\"}]}", "$.messages[0].content")]
    [InlineData("v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"\\ud800\":1}", "$")]
    [InlineData("v1/adapters", "{\"name\":\"a\",\"path\":\"\\udfff\"}", "$.path")]
    public async Task ALoneSurrogateIsA400NamingTheField(string path, string body, string field)
    {
        await using var h = await ServingHarness.Start();
        var (status, json) = await Raw(h, path, body);
        Assert.True(status == 400, $"{status} {json.ToJsonString()}");
        Assert.Equal("invalid_request_error", json["error"]!["type"]!.GetValue<string>());
        Assert.Contains($"invalid JSON at {field}:", json["error"]!["message"]!.GetValue<string>());
        Assert.DoesNotContain(h.Logs.Entries, e => e.Level >= LogLevel.Error);
        // A valid pair (an emoji) is text, and still fine.
        Assert.Equal(200, (await Raw(h, "v1/completions", "{\"prompt\":\"\\ud83d\\ude00\",\"max_tokens\":2}")).Status);
    }

    [Fact]
    public async Task EveryServerErrorIsLoggedWithItsCause()
    {
        await using var h = await ServingHarness.Start();
        // A decode step that fails (what a native error would look like) fails every row in it: a 500 for the client,
        // and the operator's log holds the exception.
        h.Server.State.Scheduler.AfterStep = () => throw new InvalidOperationException("simulated native failure");
        var (status, body) = await Raw(h, "v1/completions", "{\"prompt\":\"fail me\",\"max_tokens\":5}");
        Assert.Equal(500, status);
        Assert.Equal("server_error", body["error"]!["type"]!.GetValue<string>());
        var logged = Assert.Single(h.Logs.Entries, e => e.Level == LogLevel.Error);
        Assert.Contains("POST /v1/completions -> 500", logged.Message);
        Assert.Equal("simulated native failure", logged.Exception?.Message);
        h.Server.State.Scheduler.AfterStep = null;
        Assert.NotEmpty(await h.CompletionText("tiny-llama", "recovered", 3));
    }

    [Fact]
    public async Task RefusedAdapterLoadsAreLoggedWithTheirCause()
    {
        string root = TestPaths.TempDir();
        Directory.CreateDirectory(Path.Combine(root, "empty"));
        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root });
        Assert.Equal(403, (await h.Post("v1/adapters", new JsonObject { ["name"] = "up", ["path"] = "../" })).Status);
        Assert.Equal(400, (await h.Post("v1/adapters", new JsonObject { ["name"] = "empty", ["path"] = "empty" })).Status);
        var warnings = h.Logs.Entries.Where(e => e.Level == LogLevel.Warning).Select(e => e.Message).ToList();
        Assert.Contains(warnings, m => m.Contains("adapter load 'up'") && m.Contains("(403)") && m.Contains("outside the adapter root"));
        Assert.Contains(warnings, m => m.Contains("adapter load 'empty'") && m.Contains("(400)") && m.Contains("adapter_config.json"));
    }
}
