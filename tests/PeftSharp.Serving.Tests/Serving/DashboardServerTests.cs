using System.Net.Http.Json;
using System.Text.Json.Nodes;
using PeftSharp.Serving.Dashboard;
using PeftSharp.Training;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// The dashboard's server over real run folders: the page and its script are served from the assembly, /api/metrics tails
/// metrics.jsonl as a running `peft train` appends to it (complete lines only; a rewritten file starts again), and a
/// `peft compare` folder lists each method's run.
/// </summary>
public class DashboardServerTests
{
    static readonly HttpClient Http = new();

    static JsonObject Step(int step, double loss) => new() { ["step"] = step, ["loss"] = loss, ["lr"] = 1e-3, ["tokens_per_s"] = 100.0, ["elapsed_s"] = step * 0.5, ["rss_mb"] = 200.0, ["peak_rss_mb"] = 210.0 };

    static async Task<JsonObject> Get(DashboardServer server, string path) =>
        (await Http.GetFromJsonAsync<JsonObject>(new Uri(server.BaseAddress, path)))!;

    [Fact]
    public async Task ServesTheEmbeddedPageAndScript()
    {
        string run = TestPaths.TempDir();
        new MetricsLog(run).Append(Step(1, 2.0));
        await using var server = await DashboardServer.StartAsync(run, port: 0);
        Assert.Equal("127.0.0.1", server.BaseAddress.Host);
        var page = await Http.GetAsync(server.BaseAddress);
        Assert.Equal("text/html", page.Content.Headers.ContentType!.MediaType);
        Assert.Contains("<svg id=\"chart-loss\"", await page.Content.ReadAsStringAsync());
        var script = await Http.GetAsync(new Uri(server.BaseAddress, "dashboard.js"));
        Assert.Equal("text/javascript", script.Content.Headers.ContentType!.MediaType);
        Assert.Contains("api/metrics?run=", await script.Content.ReadAsStringAsync());
        Assert.Equal(System.Net.HttpStatusCode.NotFound, (await Http.GetAsync(new Uri(server.BaseAddress, "secret.txt"))).StatusCode);
    }

    [Fact]
    public async Task TailsMetricsAsTheyAreAppendedAndStartsAgainWhenTheFileIsRewritten()
    {
        string run = Path.Combine(TestPaths.TempDir(), "lora");
        Directory.CreateDirectory(run);
        var log = new MetricsLog(run);
        log.Append(Step(1, 2.0));
        log.Append(Step(2, 1.5));
        File.WriteAllText(Path.Combine(run, DashboardRuns.SummaryFile), "{\"steps\":5}");   // an earlier run's, replaced with --overwrite
        DashboardRuns.WriteRunPlan(run, "LoRA r=8", totalSteps: 10, plannedBytes: 300_000_000);
        await using var server = await DashboardServer.StartAsync(run, port: 0);
        Assert.Equal(["lora"], (await Get(server, "api/runs"))["runs"]!.AsArray().Select(n => n!.GetValue<string>()));

        var first = await Get(server, "api/metrics?run=lora");
        Assert.Equal([2.0, 1.5], first["records"]!.AsArray().Select(r => r!["loss"]!.GetValue<double>()));
        Assert.Equal(10, first["plan"]!["total_steps"]!.GetValue<int>());
        Assert.False(first["finished"]!.GetValue<bool>());
        Assert.Null(first["summary"]);

        log.Append(Step(3, 1.0));
        File.AppendAllText(Path.Combine(run, MetricsLog.FileName), "{\"step\":4,\"lo");   // a line being written
        long offset = first["offset"]!.GetValue<long>();
        var next = await Get(server, $"api/metrics?run=lora&offset={offset}&line={first["line"]}");
        Assert.Equal([3], next["records"]!.AsArray().Select(r => r!["step"]!.GetValue<int>()));
        Assert.Equal(3, next["line"]!.GetValue<int>());
        Assert.False(next["reset"]!.GetValue<bool>());

        log.TruncateAfter(1);   // what a resume from the step-1 checkpoint does
        var again = await Get(server, $"api/metrics?run=lora&offset={next["offset"]}&line=3");
        Assert.True(again["reset"]!.GetValue<bool>());
        Assert.Equal([1], again["records"]!.AsArray().Select(r => r!["step"]!.GetValue<int>()));

        File.AppendAllText(Path.Combine(run, MetricsLog.FileName), "ue\n{broken\n");   // the partial line completed, then garbage
        var bad = await Http.GetAsync(new Uri(server.BaseAddress, $"api/metrics?run=lora&offset={again["offset"]}&line=1"));
        Assert.Equal(System.Net.HttpStatusCode.InternalServerError, bad.StatusCode);
        Assert.StartsWith($"{Path.Combine(run, MetricsLog.FileName)} line 2: not JSON", (await bad.Content.ReadFromJsonAsync<JsonObject>())!["error"]!.GetValue<string>());
    }

    /// <summary>
    /// A long run's metrics.jsonl (here ~11 MB) is sent in pieces of at most MetricsTail.MaxChunkBytes, `more` set until
    /// the last: one request used to read the whole file into one array and send it as one answer (unbounded memory).
    /// </summary>
    [Fact]
    public async Task ALargeMetricsFileIsSentInBoundedPiecesThatAddUpToIt()
    {
        string run = Path.Combine(TestPaths.TempDir(), "long");
        Directory.CreateDirectory(run);
        const int Steps = 100_000;
        using (var w = new StreamWriter(Path.Combine(run, MetricsLog.FileName)))
            for (int i = 1; i <= Steps; i++) w.Write(Step(i, 1.0 / i).ToJsonString() + "\n");
        Assert.True(new FileInfo(Path.Combine(run, MetricsLog.FileName)).Length > 2 * MetricsTail.MaxChunkBytes);
        await using var server = await DashboardServer.StartAsync(run, port: 0);
        var steps = new List<int>();
        long offset = 0;
        int line = 0, answers = 0;
        while (true)
        {
            var page = await Http.GetAsync(new Uri(server.BaseAddress, $"api/metrics?run=long&offset={offset}&line={line}"));
            Assert.True(page.Content.Headers.ContentLength is null or <= MetricsTail.MaxChunkBytes * 2L, $"answer of {page.Content.Headers.ContentLength} bytes");
            var m = (await page.Content.ReadFromJsonAsync<JsonObject>())!;
            answers++;
            steps.AddRange(m["records"]!.AsArray().Select(r => r!["step"]!.GetValue<int>()));
            (offset, line) = (m["offset"]!.GetValue<long>(), m["line"]!.GetValue<int>());
            if (m["more"]?.GetValue<bool>() != true) break;
        }
        Assert.True(answers >= 3, $"{answers} answers");
        Assert.Equal(Enumerable.Range(1, Steps), steps);
        Assert.Equal(Steps, line);
    }

    /// <summary>A record whose step is not a whole number (markup in a copied run folder's file) is refused, naming the line.</summary>
    [Fact]
    public async Task ARecordWhoseStepIsNotAWholeNumberIsRefusedNamingTheLine()
    {
        string run = Path.Combine(TestPaths.TempDir(), "odd");
        Directory.CreateDirectory(run);
        new MetricsLog(run).Append(Step(1, 2.0));
        await using var server = await DashboardServer.StartAsync(run, port: 0);
        File.AppendAllText(Path.Combine(run, MetricsLog.FileName), "{\"step\":\"\\\"><img src=x onerror=alert(1)>\",\"loss\":1}\n");
        var bad = await Http.GetAsync(new Uri(server.BaseAddress, "api/metrics?run=odd"));
        Assert.Equal(System.Net.HttpStatusCode.InternalServerError, bad.StatusCode);
        Assert.Equal($"{Path.Combine(run, MetricsLog.FileName)} line 2: not a metrics record (a JSON object with a whole-number \"step\")",
            (await bad.Content.ReadFromJsonAsync<JsonObject>())!["error"]!.GetValue<string>());
    }

    [Fact]
    public async Task ACompareFolderShowsEveryRunHoldingMetrics()
    {
        string compare = TestPaths.TempDir();
        foreach (var (name, loss) in new[] { ("lora", 1.0), ("qlora", 1.2) })
        {
            Directory.CreateDirectory(Path.Combine(compare, name));
            new MetricsLog(Path.Combine(compare, name)).Append(Step(1, loss));
        }
        Directory.CreateDirectory(Path.Combine(compare, "dora"));   // not started yet
        await using var server = await DashboardServer.StartAsync(compare, port: 0);
        Assert.Equal(["lora", "qlora"], (await Get(server, "api/runs"))["runs"]!.AsArray().Select(n => n!.GetValue<string>()));
        Assert.Equal(1.2, (await Get(server, "api/metrics?run=qlora"))["records"]![0]!["loss"]!.GetValue<double>());

        new MetricsLog(Path.Combine(compare, "dora")).Append(Step(1, 0.9));   // compare started the next method
        Assert.Equal(["dora", "lora", "qlora"], (await Get(server, "api/runs"))["runs"]!.AsArray().Select(n => n!.GetValue<string>()));
        Assert.Equal(System.Net.HttpStatusCode.NotFound, (await Http.GetAsync(new Uri(server.BaseAddress, "api/metrics?run=..%2F..%2Fetc"))).StatusCode);
    }
}
