using System.Globalization;
using System.Text.Json.Nodes;
using PeftSharp.Cli;
using PeftSharp.Training;

namespace PeftSharp.Tests.Cli;

/// <summary>The end-of-run summary of `peft train`, against the run's own metrics.jsonl.</summary>
[Collection("console")]
public class RunSummaryCliTests
{
    [Fact]
    public void TokensPerSecondIsTheStepsTokensOverTheStepsTime()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 12), run = Path.Combine(dir, "run");
        var (code, stdout, err) = CliCapture.Run(["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", run,
            "--batch", "4", "--max-seq", "32", "--method", "lora", "--targets", "q_proj,v_proj", "--rank", "4", "--steps", "5"]);
        Assert.True(code == 0, err);
        double tokens = 0, seconds = 0;
        var rates = new List<double>();
        foreach (var line in File.ReadLines(Path.Combine(run, MetricsLog.FileName)))
        {
            var r = JsonNode.Parse(line)!.AsObject();
            if (r["tokens_per_s"] is not { } rate) continue;
            double n = r["tokens"]!.GetValue<double>();
            Assert.True(n > 0, line);
            tokens += n;
            seconds += n / rate.GetValue<double>();
            rates.Add(rate.GetValue<double>());
        }
        Assert.Equal(5, rates.Count);
        // The first step (JIT, first allocations) is the slowest: a mean of the per-step rates is not this figure.
        string want = (tokens / seconds).ToString("F0", CultureInfo.InvariantCulture);
        string text = CliCapture.Plain(stdout);
        Assert.True(text.Contains($"5 steps in ") && text.Contains($" s ({want} tokens/s)"), $"want {want} tokens/s (mean of rates {rates.Average():F0}): {text}");
        Assert.Contains($"{want} tokens/s over the steps' time", File.ReadAllText(Path.Combine(run, "report.md")));
    }

    /// <summary>
    /// A warm-up longer than the run never reaches --lr (the default --warmup 10 on a 2-step run peaked at a fifth of
    /// it, and nothing said so); the run says so, with the rate it does reach, which metrics.jsonl records.
    /// </summary>
    [Fact]
    public void AWarmUpLongerThanTheRunSaysTheRateItReaches()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8);
        string[] Args(string run, string warmup) => ["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", Path.Combine(dir, run),
            "--batch", "4", "--max-seq", "32", "--method", "lora", "--steps", "2", "--lr", "1e-3", "--warmup", warmup, "--eval-interval", "1000"];
        var (code, stdout, err) = CliCapture.Run(Args("long", "4"));
        Assert.True(code == 0, err);
        string text = CliCapture.Plain(stdout);
        Assert.Contains("warm-up of 4 steps is longer than the run's 2: the learning rate rises to 0.0005 at the last step, never the 0.001 asked", text);
        double last = File.ReadLines(Path.Combine(dir, "long", MetricsLog.FileName)).Select(l => JsonNode.Parse(l)!.AsObject())
            .Where(r => r["lr"] is not null).Last()["lr"]!.GetValue<double>();
        Assert.Equal(5e-4, last, 12);
        var (fitCode, fitOut, fitErr) = CliCapture.Run(Args("fits", "2"));
        Assert.True(fitCode == 0, fitErr);
        Assert.DoesNotContain("warm-up of", fitOut);
    }

    /// <summary>
    /// A data file with fewer rows than --batch and no eval data: the memory plan is of the batches the run fills (each
    /// holds at most the file's rows; planned at --batch it was 16% above the measured peak on a 2-row file), and the
    /// summary says there was no evaluation and how to get one, where it printed "eval loss: before , after ".
    /// </summary>
    [Fact]
    public void ASmallFileWithoutEvalDataIsPlannedAtItsRowsAndSaysHowToEvaluate()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 3), run = Path.Combine(dir, "run");
        var (code, stdout, err) = CliCapture.Run(["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", run,
            "--batch", "16", "--max-seq", "32", "--method", "lora", "--steps", "2"]);
        Assert.True(code == 0, err);
        string text = CliCapture.Plain(stdout);
        Assert.Matches(@"lora: batch 3 x seq \d+", text);
        Assert.DoesNotContain("batch 16 x seq", text);
        Assert.Contains("steps of 3x1 (--batch 16: the data has 3 rows) sequences", text);
        Assert.Contains("eval: none (no eval data: --eval-file FILE, or --eval-split 0.1", text);
        Assert.DoesNotContain("eval loss: before", text);
        Assert.Contains("| eval | none |", File.ReadAllText(Path.Combine(run, "report.md")));
    }
}
