using System.Globalization;
using PeftSharp.IO;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// report.md of SFT and DPO runs is written one way (Reports/ReportTables): the same before/after table and the same
/// planned-vs-measured memory section, whose figures are the run's summary.json.
/// </summary>
[Collection("console")]
public class RunReportTests
{
    [Fact]
    public void SftAndDpoReportsShareTheResultsTableAndTheMemorySectionOfTheirSummary()
    {
        string dir = TestPaths.TempDir();
        string sft = Path.Combine(dir, "sft"), dpo = Path.Combine(dir, "dpo"), pairs = PreferencePairs.Write(dir, 8);
        string[] common = ["--model", TestPaths.TinyLlama, "--steps", "2", "--batch", "4", "--max-seq", "32"];
        string reversal = ReversalTask.Write(dir, 8);
        var (code, _, err) = CliCapture.Run(["train", "--method", "lora", "--data", reversal, "--eval-file", reversal, "--eval-interval", "1000", "--out", sft, .. common]);
        Assert.True(code == 0, err);
        (code, _, err) = CliCapture.Run(["train", "--method", "dpo", "--adapter-method", "lora", "--data", pairs, "--eval-file", pairs, "--eval-interval", "1000", "--out", dpo, .. common]);
        Assert.True(code == 0, err);

        foreach (var run in new[] { sft, dpo })
        {
            string report = File.ReadAllText(Path.Combine(run, "report.md"));
            var summary = JsonFile.ReadObject(Path.Combine(run, "summary.json"));
            string Mb(string key) => (summary[key]!.GetValue<long>() / 1e6).ToString("F1", CultureInfo.InvariantCulture);
            string F4(string key) => summary[key]!.GetValue<double>().ToString("F4", CultureInfo.InvariantCulture);
            Assert.Contains("| metric | before | after |\n|---|---|---|\n", report);
            Assert.Contains($"| eval loss | {F4("eval_loss_before")} | {F4("eval_loss_after")} |\n", report);
            Assert.Contains("## Memory: planned vs measured\n", report);
            Assert.Contains("| resident | planned MB | measured MB |\n|---|---|---|\n| weights | ", report);
            Assert.Contains($"| total (peak RSS) | {Mb("planned_bytes")} | {Mb("peak_rss_bytes")} |\n\nPeak error of the plan: ", report);
            Assert.EndsWith("![memory](memory.png)\n", report);
        }
    }
}
