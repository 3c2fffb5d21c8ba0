using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.Serving.Hosting;

namespace PeftSharp.Tests.Serving;

public class RobustnessTests
{
    static async Task<(int Status, string Message)> Raw(ServingHarness h, string path, string body)
    {
        using var resp = await h.Http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
        var json = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!;
        return ((int)resp.StatusCode, json["error"]?["message"]?.GetValue<string>() ?? "");
    }

    [Theory]
    [InlineData("{not json", "invalid JSON")]
    [InlineData("[1,2]", "JSON object")]
    [InlineData("{\"model\":\"tiny-llama\"}", "'prompt' is required")]
    [InlineData("{\"prompt\":\"x\",\"max_tokens\":\"ten\"}", "'max_tokens' must be an integer")]
    [InlineData("{\"prompt\":\"x\",\"max_tokens\":0}", "'max_tokens' must be >= 1")]
    [InlineData("{\"prompt\":\"x\",\"max_tokens\":100000000000}", "'max_tokens' is out of range (got 100000000000;")]
    [InlineData("{\"prompt\":\"x\",\"temperature\":-1}", "'temperature'")]
    [InlineData("{\"prompt\":\"x\",\"top_p\":0}", "'top_p'")]
    [InlineData("{\"prompt\":\"x\",\"n\":2}", "'n' must be 1")]
    [InlineData("{\"prompt\":\"x\",\"stop\":[1]}", "'stop'")]
    [InlineData("{\"prompt\":\"x\",\"stream\":\"yes\"}", "'stream'")]
    [InlineData("{\"prompt\":[5, 999999]}", "outside the vocabulary")]
    [InlineData("{\"prompt\":\"x\",\"max_tokens\":128}", "exceeds the model's context of 128")]
    public async Task BadCompletionRequestsGet400WithTheReason(string body, string reason)
    {
        await using var h = await ServingHarness.Start();
        var (status, message) = await Raw(h, "v1/completions", body);
        Assert.Equal(400, status);
        Assert.Contains(reason, message);
    }

    [Theory]
    [InlineData("{not json", "invalid JSON")]
    [InlineData("[1,2]", "JSON object")]
    [InlineData("{\"name\":\"a\"}", "'path' is required")]
    public async Task BadAdapterLoadRequestsGet400WithTheReason(string body, string reason)
    {
        await using var h = await ServingHarness.Start();
        var (status, message) = await Raw(h, "v1/adapters", body);
        Assert.Equal(400, status);
        Assert.Contains(reason, message);
    }

    [Theory]
    [InlineData("{\"messages\":[]}", "'messages' must be a non-empty array")]
    [InlineData("{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", "role 'wizard'")]
    [InlineData("{\"messages\":[{\"role\":\"user\"}]}", "content")]
    [InlineData("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":0}", "'max_completion_tokens' must be >= 1 (got 0)")]
    public async Task BadChatRequestsGet400WithTheReason(string body, string reason)
    {
        await using var h = await ServingHarness.Start();
        var (status, message) = await Raw(h, "v1/chat/completions", body);
        Assert.Equal(400, status);
        Assert.Contains(reason, message);
    }

    [Fact]
    public async Task ABodyThatIsNotUtf8Gets400InsteadOfAChangedPrompt()
    {
        await using var h = await ServingHarness.Start();
        // {"prompt":"caf\xe9"}: Latin-1's e-acute, not UTF-8.
        var bytes = Encoding.ASCII.GetBytes("{\"prompt\":\"caf").Concat(new byte[] { 0xE9 }).Concat(Encoding.ASCII.GetBytes("\"}")).ToArray();
        using var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new("application/json");
        using var resp = await h.Http.PostAsync("v1/completions", content);
        Assert.Equal(400, (int)resp.StatusCode);
        Assert.Contains("not valid UTF-8", JsonNode.Parse(await resp.Content.ReadAsStringAsync())!["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task UnknownModelAndEndpointGet404()
    {
        await using var h = await ServingHarness.Start();
        var (status, message) = await Raw(h, "v1/completions", "{\"model\":\"nope\",\"prompt\":\"x\"}");
        Assert.Equal(404, status);
        Assert.Contains("'nope' not found", message);
        Assert.Equal(404, (await Raw(h, "v1/nothing", "{}")).Status);
    }

    [Fact]
    public async Task GarbageNeverTakesTheServerDown()
    {
        await using var h = await ServingHarness.Start();
        var rng = new Random(1);
        string[] fragments = ["{", "}", "[", "]", "\"prompt\"", ":", ",", "\"x\"", "null", "-1e999", "\"max_tokens\"", "1e30", "\"\\ud800\"", "true", "\u0000"];
        for (int i = 0; i < 60; i++)
        {
            string body = string.Concat(Enumerable.Range(0, rng.Next(1, 12)).Select(_ => fragments[rng.Next(fragments.Length)]));
            using var resp = await h.Http.PostAsync(i % 2 == 0 ? "v1/completions" : "v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
            Assert.True((int)resp.StatusCode is 200 or 400, $"{body} -> {(int)resp.StatusCode}");
        }
        Assert.NotEmpty(await h.CompletionText("tiny-llama", "still alive", 3));
    }

    [Fact]
    public async Task AFullQueueAnswers429()
    {
        await using var h = await ServingHarness.Start(new ServerOptions { MaxQueue = 1, MaxBatch = 1 });
        var gate = h.HoldWorker();
        var first = h.CompletionText("tiny-llama", "first", 4);
        await ServingHarness.WaitUntil(() => h.Server.State.Scheduler.QueuedJobs == 1, "the first request to queue");
        var (status, message) = await Raw(h, "v1/completions", "{\"prompt\":\"second\",\"max_tokens\":4}");
        Assert.Equal(429, status);
        Assert.Contains("--max-queue", message);
        gate.Release();
        Assert.Equal(ServingHarness.Reference(null, h.Encode("first"), 4), await first);
    }

    [Fact]
    public async Task AClientThatDisconnectsFreesItsRow()
    {
        await using var h = await ServingHarness.Start();
        h.Server.State.Scheduler.AfterStep = () => Thread.Sleep(50);   // 120 tokens take 6+ s, not milliseconds
        // A raw socket, closed mid-stream the way curl does on Ctrl-C. (HttpClient would not do: disposing an
        // unfinished response makes it drain the body for up to 2 s to reuse the connection, so the server may
        // never see a disconnect.)
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        await socket.ConnectAsync(h.Server.BaseAddress.Host, h.Server.BaseAddress.Port);
        string body = new JsonObject { ["prompt"] = "go on", ["max_tokens"] = 120, ["temperature"] = 0, ["stream"] = true }.ToJsonString();
        string request = $"POST /v1/completions HTTP/1.1\r\nHost: {h.Server.BaseAddress.Authority}\r\nContent-Type: application/json\r\n" +
                         $"Content-Length: {Encoding.UTF8.GetByteCount(body)}\r\n\r\n{body}";
        await socket.SendAsync(Encoding.UTF8.GetBytes(request));
        var seen = new StringBuilder();
        var buffer = new byte[4096];
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
            while (!seen.ToString().Contains("data: "))                 // the row is decoding
            {
                int n = await socket.ReceiveAsync(buffer, System.Net.Sockets.SocketFlags.None, timeout.Token);
                Assert.True(n > 0, $"the server closed the stream early: {seen}");
                seen.Append(Encoding.UTF8.GetString(buffer, 0, n));
            }
        Assert.StartsWith("HTTP/1.1 200", seen.ToString());
        socket.Close();
        await ServingHarness.WaitUntil(() => h.Server.State.Scheduler.ActiveRows == 0, "the row to leave");
        Assert.Equal(1, h.Server.State.Scheduler.CancelledRows);
        Assert.True(h.Server.State.Scheduler.TokensGenerated < 120, "the row ran to max_tokens instead of being cancelled");
        h.Server.State.Scheduler.AfterStep = null;
        Assert.NotEmpty(await h.CompletionText("tiny-llama", "next", 3));
    }

    [Fact]
    public async Task ShutdownLetsRunningRequestsFinish()
    {
        var h = await ServingHarness.Start(new ServerOptions { ShutdownGrace = TimeSpan.FromSeconds(30) });
        var gate = h.HoldWorker();
        var running = h.CompletionText("tiny-llama", "finish me", 10);
        await ServingHarness.WaitUntil(() => h.Server.State.Scheduler.QueuedJobs == 1, "the request to queue");
        var stop = Task.Run(async () => await h.Server.DisposeAsync());   // stopping blocks until the drain ends
        gate.Release();
        Assert.Equal(ServingHarness.Reference(null, h.Encode("finish me"), 10), await running);
        await stop;
        await h.DisposeAsync();
    }

    [Fact]
    public async Task ShutdownCancelsRequestsThatOutliveTheGrace()
    {
        var h = await ServingHarness.Start(new ServerOptions { ShutdownGrace = TimeSpan.Zero });
        var events = new List<string>();
        var gate = h.HoldWorker();
        var running = Task.Run(async () =>
        {
            try { events.AddRange(await Sse.Read(h.Http, "v1/completions", new JsonObject { ["prompt"] = "x", ["max_tokens"] = 100, ["stream"] = true })); }
            catch (HttpRequestException) { }
        });
        await ServingHarness.WaitUntil(() => h.Server.State.Scheduler.QueuedJobs == 1, "the request to queue");
        var stop = Task.Run(async () => await h.Server.DisposeAsync());   // stopping blocks until the drain ends
        gate.Release();
        await stop;
        await running;
        Assert.True(events.Count < 100);
        await h.DisposeAsync();
    }
}
