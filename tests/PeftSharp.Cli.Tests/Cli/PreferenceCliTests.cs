using System.Text.Json.Nodes;
using PeftSharp.Cli;
using PeftSharp.IO;

namespace PeftSharp.Tests.Cli;

/// <summary>`peft train --method dpo|orpo` and `peft eval` on preference data, through the command line.</summary>
[Collection("console")]
public class PreferenceCliTests
{
    static string Pairs(string dir, int n = 12)
    {
        string path = Path.Combine(dir, "prefs.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, n).Select(i => $"{{\"prompt\":\"n{i} ->\",\"chosen\":\" {i}{i}\",\"rejected\":\" {i + 1}x\"}}"));
        return path;
    }

    static string[] Train(string data, string outDir, string method, params string[] extra) =>
        ["train", "--method", method, "--adapter-method", "lora", "--model", TestPaths.TinyLlama, "--data", data, "--eval-file", data, "--out", outDir,
         .. TrainEvalCliTests.Defaults(extra, ("--steps", "3"), ("--batch", "4"), ("--max-seq", "32"), ("--eval-interval", "3")), .. extra];

    static List<JsonObject> Records(string runDir) =>
        File.ReadLines(Path.Combine(runDir, "metrics.jsonl")).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();

    [Fact]
    public void DpoRunWritesTrlMetricsReportPlotsAndAnAdapterThatEvalScores()
    {
        string dir = TestPaths.TempDir(), data = Pairs(dir), outDir = Path.Combine(dir, "dpo");
        var (code, stdout, err) = CliCapture.Run(Train(data, outDir, "dpo", "--lr", "5e-3"));
        Assert.True(code == 0, err + stdout);
        var steps = Records(outDir).Where(r => r["loss"] is not null).ToList();
        Assert.Equal(3, steps.Count);
        // A fresh LoRA starts at policy = reference: loss log 2, margins 0, no pair won yet.
        Assert.Equal(Math.Log(2), steps[0]["loss"]!.GetValue<double>(), 5);
        Assert.Equal(0.0, steps[0]["rewards/margins"]!.GetValue<double>(), 6);
        foreach (var key in new[] { "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected" })
            Assert.All(steps, s => Assert.NotNull(s[key]));
        var evals = Records(outDir).Where(r => r["eval_loss"] is not null).ToList();
        Assert.Equal([0, 3], evals.Select(e => e["step"]!.GetValue<int>()));
        Assert.Equal(0.0, evals[0]["eval_rewards/accuracies"]!.GetValue<double>());
        Assert.True(evals[1]["eval_rewards/margins"]!.GetValue<double>() > 0, "three DPO steps move the held-out margin up");
        var summary = JsonFile.ReadObject(Path.Combine(outDir, "summary.json"));
        Assert.Equal(evals[1]["eval_rewards/accuracies"]!.GetValue<double>(), summary["reward_accuracy_after"]!.GetValue<double>());
        Assert.InRange(summary["prefers_chosen_after"]!.GetValue<double>(), 0, 1);
        foreach (var f in new[] { "report.md", "loss.png", "rewards.png", "memory.png", "final/adapter_config.json" }) Assert.True(File.Exists(Path.Combine(outDir, f)), f);
        Assert.Contains("reward accuracy", File.ReadAllText(Path.Combine(outDir, "report.md")));

        var (evalCode, evalOut, evalErr) = CliCapture.Run("eval", "--model", TestPaths.TinyLlama, "--adapter", Path.Combine(outDir, "final"), "--data", data, "--max-seq", "32");
        Assert.True(evalCode == 0, evalErr + evalOut);
        Assert.Contains("prefers chosen", evalOut);
        Assert.Contains($"reward accuracy {summary["reward_accuracy_after"]!.GetValue<double>().ToString("P1", System.Globalization.CultureInfo.InvariantCulture)}", evalOut);
    }

    /// <summary>
    /// An SFT adapter trained as LoRA on the dense base, continued by DPO with the default --adapter-method qlora: the
    /// base is quantised, so the fingerprints differ. The error said "pass --allow-base-mismatch", which would train on
    /// a base the adapter never saw; it now names the cause and the flag that fixes it.
    /// </summary>
    [Fact]
    public void ADenseAdapterOnAQuantisedBaseSaysToLoadTheBaseDense()
    {
        string dir = TestPaths.TempDir(), data = Pairs(dir), sft = Path.Combine(dir, "sft");
        var (sftCode, _, sftErr) = CliCapture.Run("train", "--method", "lora", "--model", TestPaths.TinyLlama, "--data", ReversalTask.Write(dir, 4),
            "--out", sft, "--steps", "1", "--batch", "2", "--max-seq", "32", "--eval-interval", "1000");
        Assert.True(sftCode == 0, sftErr);
        var (code, _, err) = CliCapture.Run("train", "--method", "dpo", "--init-adapter", Path.Combine(sft, "final"), "--model", TestPaths.TinyLlama,
            "--data", data, "--out", Path.Combine(dir, "dpo"), "--steps", "1", "--batch", "2", "--max-seq", "32");
        Assert.Equal(1, code);
        Assert.Contains("adapter was trained on a dense base, and this model is nf4-b64-dq-quantised", err);
        Assert.Contains("--adapter-method lora or dora", err);
        Assert.Single(err.Trim().Split('\n'));
    }

    [Fact]
    public void PrecomputedReferenceGivesTheSameRunAsPerBatchReference()
    {
        string dir = TestPaths.TempDir(), data = Pairs(dir);
        Assert.Equal(0, CliCapture.Run(Train(data, Path.Combine(dir, "a"), "dpo", "--eval-interval", "1000")).Code);
        Assert.Equal(0, CliCapture.Run(Train(data, Path.Combine(dir, "b"), "dpo", "--eval-interval", "1000", "--precompute-ref")).Code);
        var a = Records(Path.Combine(dir, "a")).Where(r => r["loss"] is not null).Select(r => r["loss"]!.GetValue<double>()).ToList();
        var b = Records(Path.Combine(dir, "b")).Where(r => r["loss"] is not null).Select(r => r["loss"]!.GetValue<double>()).ToList();
        Assert.Equal(3, a.Count);
        for (int i = 0; i < a.Count; i++) Assert.Equal(a[i], b[i], 5);
    }

    [Fact]
    public void OrpoRunLogsNllAndOddsRatio()
    {
        string dir = TestPaths.TempDir(), data = Pairs(dir), outDir = Path.Combine(dir, "orpo");
        var (code, stdout, err) = CliCapture.Run(Train(data, outDir, "orpo", "--eval-interval", "1000"));
        Assert.True(code == 0, err + stdout);
        var steps = Records(outDir).Where(r => r["loss"] is not null).ToList();
        Assert.All(steps, s =>
        {
            // loss = NLL + beta * mean(-log sigmoid(log odds)), and TRL's log_odds_ratio is mean(log sigmoid(log odds)).
            double expected = s["nll_loss"]!.GetValue<double>() - 0.1 * s["log_odds_ratio"]!.GetValue<double>();
            Assert.Equal(expected, s["loss"]!.GetValue<double>(), 1e-4);   // metrics.jsonl rounds to 6 digits
        });
    }

    [Fact]
    public void ResumedDpoRunReportsTheBeforeFiguresItsFirstProcessMeasured()
    {
        string dir = TestPaths.TempDir(), data = Pairs(dir), outDir = Path.Combine(dir, "dpo");
        Assert.Equal(0, CliCapture.Run(Train(data, outDir, "dpo", "--lr", "5e-3", "--steps", "4", "--save-interval", "2", "--eval-interval", "1000")).Code);
        var whole = JsonFile.ReadObject(Path.Combine(outDir, "summary.json"));
        // Make it a run that died after its step-2 checkpoint, then resume it with nothing but its folder.
        Directory.Delete(Path.Combine(outDir, "final"), true);
        foreach (var ckpt in Directory.GetDirectories(Path.Combine(outDir, "checkpoints")).Where(d => !d.EndsWith("step-000002"))) Directory.Delete(ckpt, true);
        var (code, stdout, err) = CliCapture.Run("train", "--resume", outDir);
        Assert.True(code == 0, err + stdout);

        var before = Records(outDir).Single(r => r["eval_loss"] is not null && r["step"]!.GetValue<int>() == 0);   // not evaluated again
        var resumed = JsonFile.ReadObject(Path.Combine(outDir, "summary.json"));
        foreach (var (key, field) in new[] { ("eval_loss_before", "eval_loss"), ("reward_accuracy_before", "eval_rewards/accuracies"),
                     ("reward_margin_before", "eval_rewards/margins"), ("prefers_chosen_before", "eval_logps/accuracies"), ("exact_match_before", "eval_accuracy") })
        {
            Assert.True(resumed[key] is not null, $"{key} missing after resume");
            Assert.Equal(before[field]!.GetValue<double>(), resumed[key]!.GetValue<double>(), 6);
            Assert.Equal(whole[key]!.GetValue<double>(), resumed[key]!.GetValue<double>(), 5);   // summary.json keeps full precision, the record 6 digits
        }
        Assert.Equal(whole["reward_accuracy_after"]!.GetValue<double>(), resumed["reward_accuracy_after"]!.GetValue<double>(), 5);
    }

    [Theory]
    [InlineData("{\"prompt\":\"p\",\"chosen\":\"\",\"rejected\":\" x\"}", "'chosen' is an empty response")]
    [InlineData("{\"prompt\":\"p\",\"chosen\":\" same\",\"rejected\":\" same\"}", "the same response")]
    [InlineData("{\"chosen\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\"}],\"rejected\":[{\"role\":\"user\",\"content\":\"c\"},{\"role\":\"assistant\",\"content\":\"d\"}]}", "do not share a prompt prefix")]
    public void BadPairsStopTheRunNamingFileAndLine(string badLine, string cause)
    {
        string dir = TestPaths.TempDir(), data = Path.Combine(dir, "bad.jsonl"), outDir = Path.Combine(dir, "out");
        File.WriteAllLines(data, ["{\"prompt\":\"p\",\"chosen\":\" a\",\"rejected\":\" b\"}", badLine]);
        var (code, _, err) = CliCapture.Run(Train(data, outDir, "dpo"));
        Assert.Equal(1, code);
        Assert.Contains($"{data}:2", err);
        Assert.Contains(cause, err);
        Assert.DoesNotContain("   at ", err);   // one line, no stack trace
        Assert.False(File.Exists(Path.Combine(outDir, "metrics.jsonl")));
    }

    [Fact]
    public void PreferencePairsGivenToSupervisedTrainingNameTheMethodsThatReadThem()
    {
        string dir = TestPaths.TempDir(), data = Pairs(dir, 4), outDir = Path.Combine(dir, "out");
        var (code, _, err) = CliCapture.Run("train", "--method", "lora", "--model", TestPaths.TinyLlama, "--data", data, "--out", outDir, "--steps", "1");
        Assert.Equal(1, code);
        Assert.Equal($"error: {data}:1: a preference pair ('chosen'/'rejected') is data for the dpo or orpo method, not for supervised training", err.Trim());
        Assert.False(File.Exists(Path.Combine(outDir, "metrics.jsonl")));
    }

    [Fact]
    public void OverlongPairsAreCountedInAWarningNamingTheLine()
    {
        string dir = TestPaths.TempDir(), data = Pairs(dir, 8);
        File.AppendAllText(data, $"{{\"prompt\":\"p\",\"chosen\":\"{new string('a', 60)}\",\"rejected\":\" b{new string('c', 60)}\"}}\n");
        var (code, stdout, err) = CliCapture.Run(Train(data, Path.Combine(dir, "out"), "dpo", "--eval-interval", "1000", "--steps", "1"));
        Assert.True(code == 0, err + stdout);
        Assert.Contains("1 pair(s) cut to --max-seq 32", stdout.Replace("\n", ""));
        Assert.Contains($"{data}:9", stdout.Replace("\n", ""));
    }

    [Theory]
    [InlineData("--adapter-method", "adapter", "--adapter-method")]
    [InlineData("--beta", "0", "--beta")]
    [InlineData("--loss-type", "hinge", "--loss-type")]
    [InlineData("--label-smoothing", "0.7", "--label-smoothing")]
    public void BadPreferenceOptionsAreRefusedByName(string flag, string value, string named)
    {
        string dir = TestPaths.TempDir(), data = Pairs(dir);
        var (code, _, err) = CliCapture.Run(Train(data, Path.Combine(dir, "out"), "dpo", flag, value));
        Assert.NotEqual(0, code);
        Assert.Contains(named, err);
    }

    [Fact]
    public void CompareAcceptsDpoAndOrpoRowsAndReadsTheirSummary()
    {
        Assert.True(new PeftSharp.Cli.Commands.CompareCommand.Settings { Methods = "qlora,dpo,orpo" }.Validate().Successful);
        var bad = new PeftSharp.Cli.Commands.CompareCommand.Settings { Methods = "qlora,kto" }.Validate();
        Assert.False(bad.Successful);
        Assert.Contains("dpo, orpo", bad.Message);

        string dir = TestPaths.TempDir(), data = Pairs(dir), outDir = Path.Combine(dir, "dpo");
        Assert.Equal(0, CliCapture.Run(Train(data, outDir, "dpo", "--eval-interval", "1000")).Code);
        var row = PeftSharp.Cli.Compare.CompareRow.Read(new PeftSharp.Cli.Compare.CompareRun("dpo", "dpo", null, null), outDir);
        Assert.True(row.Run.IsLora);   // merged like the LoRA family for the inference overhead
        Assert.True(row.TrainableParams > 0 && row.PeakRssBytes > 0);
        Assert.Equal(Path.Combine(outDir, "final"), row.FinalDir);
        Assert.NotNull(row.ExactMatchAfter);
    }
}
