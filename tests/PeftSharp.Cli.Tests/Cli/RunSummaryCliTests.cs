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
        string text = System.Text.RegularExpressions.Regex.Replace(System.Text.RegularExpressions.Regex.Replace(stdout, @"\e\[[0-9;]*m", ""), @"\s+", " ");
        Assert.True(text.Contains($"5 steps in ") && text.Contains($" s ({want} tokens/s)"), $"want {want} tokens/s (mean of rates {rates.Average():F0}): {text}");
        Assert.Contains($"{want} tokens/s over the steps' time", File.ReadAllText(Path.Combine(run, "report.md")));
    }
}
