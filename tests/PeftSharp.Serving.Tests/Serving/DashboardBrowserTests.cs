using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using PeftSharp.Training;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// The live training page as a user sees it: `peft train --dashboard --dashboard-port 0` in a child process (stdin
/// redirected, so it exits when the run ends), its page loaded in headless Chromium. The loss curve holds exactly the
/// losses metrics.jsonl holds at that moment, and it grows while the run continues. Skipped without Chromium.
/// </summary>
public class DashboardBrowserTests(ITestOutputHelper output)
{
    const string LossPath = "#chart-loss path[data-series='train loss']";

    [Fact]
    public async Task TheLossCurveShowsMetricsAndGrowsWhileTrainingRuns()
    {
        await using var chromium = await HeadlessChromium.Launch(output);
        if (chromium is null) return;
        string dir = TestPaths.TempDir(), run = Path.Combine(dir, "run"), data = ReversalTask.Write(dir, 16);
        // Far more steps than the checks take (the process is killed at the end): 60 steps once finished before the
        // page was read, after training got faster, and the page rightly said "finished".
        using var train = StartTrain(["train", "--model", TestPaths.TinyLlama, "--method", "lora", "--data", data, "--eval-file", data,
            "--steps", "10000", "--eval-interval", "20", "--eval-split", "0", "--batch", "4", "--max-seq", "32", "--lr", "3e-3", "--warmup", "5",
            "--out", run, "--dashboard", "--dashboard-port", "0"], out var url);
        try
        {
            output.WriteLine($"dashboard at {url}");
            var page = await chromium.NewPage();
            await page.GotoAsync(url);
            await HeadlessChromium.WaitFor(page, $"document.querySelector(\"{LossPath}\")", "the first loss point", 120_000);
            var (points, last) = await LossCurve(page);
            AssertCurveMatchesMetrics(run, points, last);

            // The run continues: the curve grows, still point for point what metrics.jsonl says.
            await HeadlessChromium.WaitFor(page, $"+document.querySelector(\"{LossPath}\").dataset.points > {points}", "more loss points", 120_000);
            var (more, moreLast) = await LossCurve(page);
            Assert.True(more > points, $"{more} points after {points}");
            AssertCurveMatchesMetrics(run, more, moreLast);
            Assert.Contains("running", await page.InnerTextAsync(".run b"));
            Assert.Matches(@"step \d+ / 10000", await page.InnerTextAsync(".run .figures"));
            await HeadlessChromium.WaitFor(page, "document.querySelector(\"#chart-lr path\") && document.querySelector(\"#chart-memory path[data-series='planned peak MiB']\")", "the lr and planned-memory lines");
            long planned = PeftSharp.IO.JsonFile.ReadObject(Path.Combine(run, "run-plan.json"))["planned_bytes"]!.GetValue<long>();
            string drawn = (await page.Locator("#chart-memory path[data-series='planned peak MiB']").GetAttributeAsync("data-last"))!;
            Assert.Equal(planned / 1048576.0, double.Parse(drawn, CultureInfo.InvariantCulture), 9);
            await chromium.Screenshot(page, "dashboard-live");
            Assert.Empty(chromium.PageErrors);
        }
        finally
        {
            if (!train.HasExited) train.Kill(entireProcessTree: true);
        }
    }

    [Fact]
    public async Task ACompareFolderDrawsEveryRunAndSaysWhenTheServerIsGone()
    {
        await using var chromium = await HeadlessChromium.Launch(output);
        if (chromium is null) return;
        string compare = TestPaths.TempDir();
        foreach (var (name, steps) in new[] { ("lora", 5), ("qlora", 3) })
        {
            var log = new MetricsLog(Path.Combine(compare, name));
            Directory.CreateDirectory(Path.Combine(compare, name));
            for (int i = 1; i <= steps; i++)
                log.Append(new JsonObject { ["step"] = i, ["loss"] = 2.0 / i + steps, ["lr"] = 1e-3, ["tokens_per_s"] = 50.0, ["elapsed_s"] = i * 1.0, ["rss_mb"] = 100.0, ["peak_rss_mb"] = 100.0 });
        }
        var server = await PeftSharp.Serving.Dashboard.DashboardServer.StartAsync(compare, port: 0);
        var page = await chromium.NewPage();
        await page.GotoAsync(server.BaseAddress.ToString());
        await HeadlessChromium.WaitFor(page, "document.querySelectorAll(\"#chart-loss path[data-series$='train loss']\").length === 2", "both runs' loss curves");
        Assert.Equal("5", await page.Locator("#chart-loss path[data-series='lora train loss']").GetAttributeAsync("data-points"));
        Assert.Equal((2.0 / 3 + 3).ToString("R", CultureInfo.InvariantCulture), await page.Locator("#chart-loss path[data-series='qlora train loss']").GetAttributeAsync("data-last"));
        Assert.Equal(["lora", "qlora"], await page.Locator(".run").EvaluateAllAsync<string[]>("els => els.map(e => e.dataset.run)"));

        await server.DisposeAsync();   // the training process ended
        await HeadlessChromium.WaitFor(page, "!document.getElementById('error').hidden", "the server-gone notice");
        Assert.Contains("the dashboard server is gone", await page.InnerTextAsync("#error"));
        Assert.Equal("5", await page.Locator("#chart-loss path[data-series='lora train loss']").GetAttributeAsync("data-points"));   // last figures kept
    }

    /// <summary>
    /// A compare folder where one run's metrics.jsonl goes bad while the page is open (a record whose step is text):
    /// the page names that run's error and keeps updating the others (the poll loop stopped at the bad run, so the
    /// runs after it froze). A run that is bad before the server starts is refused at start instead.
    /// </summary>
    [Fact]
    public async Task ACorruptRunInACompareFolderDoesNotStopTheOthersUpdating()
    {
        await using var chromium = await HeadlessChromium.Launch(output);
        if (chromium is null) return;
        string compare = TestPaths.TempDir();
        JsonObject Record(int i) => new() { ["step"] = i, ["loss"] = 3.0 / i, ["lr"] = 1e-3, ["tokens_per_s"] = 50.0, ["elapsed_s"] = i * 1.0, ["rss_mb"] = 100.0, ["peak_rss_mb"] = 100.0 };
        Directory.CreateDirectory(Path.Combine(compare, "a-bad"));
        new MetricsLog(Path.Combine(compare, "a-bad")).Append(Record(1));
        Directory.CreateDirectory(Path.Combine(compare, "lora"));
        var log = new MetricsLog(Path.Combine(compare, "lora"));
        for (int i = 1; i <= 3; i++) log.Append(Record(i));
        await using var server = await PeftSharp.Serving.Dashboard.DashboardServer.StartAsync(compare, port: 0);
        var page = await chromium.NewPage();
        await page.GotoAsync(server.BaseAddress.ToString());
        await HeadlessChromium.WaitFor(page, "document.querySelector(\"#chart-loss path[data-series='lora train loss']\")?.dataset.points === '3'", "lora's 3 points");
        // "a-bad" sorts first, so its error came before "lora" in every poll.
        File.AppendAllText(Path.Combine(compare, "a-bad", MetricsLog.FileName), "{\"step\": \"one\", \"loss\": 1.0}\n");
        await HeadlessChromium.WaitFor(page, "document.getElementById('error').innerText.includes('a-bad')", "a-bad's error on the page");
        for (int i = 4; i <= 6; i++) log.Append(Record(i));   // the run after the bad one goes on training
        await HeadlessChromium.WaitFor(page, "document.querySelector(\"#chart-loss path[data-series='lora train loss']\")?.dataset.points === '6'", "lora's 6 points");
        Assert.Contains("a-bad", await page.InnerTextAsync("#error"));
    }

    static async Task<(int Points, double Last)> LossCurve(IPage page)
    {
        var el = page.Locator(LossPath);
        int points = int.Parse((await el.GetAttributeAsync("data-points"))!, CultureInfo.InvariantCulture);
        double last = double.Parse((await el.GetAttributeAsync("data-last"))!, CultureInfo.InvariantCulture);
        return (points, last);
    }

    /// <summary>The page's curve has <paramref name="points"/> points ending at <paramref name="last"/>: metrics.jsonl's first that many losses.</summary>
    static void AssertCurveMatchesMetrics(string run, int points, double last)
    {
        var losses = File.ReadLines(Path.Combine(run, MetricsLog.FileName)).Where(l => l.EndsWith('}'))
            .Select(l => JsonNode.Parse(l)!).Where(n => n["loss"] is not null).Select(n => n["loss"]!.GetValue<double>()).ToList();
        Assert.True(losses.Count >= points, $"the page shows {points} points, metrics.jsonl has {losses.Count}");
        Assert.Equal(losses[points - 1], last);   // JS prints the double's shortest round-trip form, as System.Text.Json does
    }

    /// <summary>`peft ARGS` as a child process of this build, stdin redirected; returns once it printed its dashboard URL.</summary>
    Process StartTrain(IReadOnlyList<string> args, out string url)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        psi.ArgumentList.Add(typeof(PeftSharp.Cli.CliApp).Assembly.Location);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var found = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        p.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) { found.TrySetException(new InvalidOperationException("peft train ended before printing its dashboard URL")); return; }
            if (Regex.Match(e.Data, @"dashboard (http://127\.0\.0\.1:\d+/)") is { Success: true } m) found.TrySetResult(m.Groups[1].Value);
        };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) try { output.WriteLine("train stderr: " + e.Data); } catch (InvalidOperationException) { } };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!found.Task.Wait(TimeSpan.FromSeconds(120))) { p.Kill(entireProcessTree: true); Assert.Fail("no dashboard URL within 120 s"); }
        url = found.Task.Result;
        return p;
    }
}
