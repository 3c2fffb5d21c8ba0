using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Tests.Training.Preference;
using PeftSharp.Training;
using PeftSharp.Training.Reporting;

namespace PeftSharp.Tests.Training.Reporting;

/// <summary>
/// `peft train --report-to tensorboard`: the event files in RUN/tensorboard, read back by an independent parser of the
/// record format (CRCs checked), hold every metrics.jsonl figure at its step under its TensorBoard tag, the planned and
/// measured peak of summary.json, and the options and report as text-plugin summaries.
/// </summary>
[Collection("console")]
public class TensorBoardReportTests
{
    [Fact]
    public void Crc32CMatchesTheKnownVectors()
    {
        Assert.Equal(0xE3069283u, TensorBoardEvents.Crc32C("123456789"u8));   // the CRC catalogue's check value
        Assert.Equal(0x8A9136AAu, TensorBoardEvents.Crc32C(new byte[32]));     // RFC 3720 B.4: 32 bytes of zeros
        Assert.Equal(0x62A8AB43u, TensorBoardEvents.Crc32C(Enumerable.Repeat((byte)0xFF, 32).ToArray()));   // 32 bytes of 0xFF
        Assert.Equal(0x46DD794Eu, TensorBoardEvents.Crc32C(Enumerable.Range(0, 32).Select(i => (byte)i).ToArray()));   // ascending
    }

    /// <summary>metrics.jsonl field -> TensorBoard tag, as a user reads them in TensorBoard (HF's Trainer names).</summary>
    static readonly (string Field, string Tag)[] SftTags =
    [
        ("loss", "train/loss"), ("lr", "train/learning_rate"), ("grad_norm", "train/grad_norm"), ("tokens_per_s", "train/tokens_per_s"),
        ("rss_mb", "memory/rss_mb"), ("peak_rss_mb", "memory/peak_rss_mb"), ("eval_loss", "eval/loss"), ("eval_accuracy", "eval/accuracy"),
    ];

    [Fact]
    public void SftRunWritesEveryMetricAtItsStepAndTheMemoryAndTexts()
    {
        string dir = TestPaths.TempDir(), run = Path.Combine(dir, "run"), data = ReversalTask.Write(dir, 8);
        var (code, _, err) = CliCapture.Run("train", "--model", TestPaths.TinyLlama, "--method", "lora", "--data", data, "--eval-file", data,
            "--steps", "4", "--eval-interval", "2", "--batch", "4", "--max-seq", "32", "--out", run, "--report-to", "tensorboard");
        Assert.True(code == 0, err);

        var files = Directory.GetFiles(Path.Combine(run, "tensorboard"), "events.out.tfevents.*");
        Assert.Single(files);
        Assert.Equal("brain.Event:2", TensorBoardEvents.FileVersion(TensorBoardEvents.Records(files[0])[0]));
        var values = TensorBoardEvents.Values(Path.Combine(run, "tensorboard"));
        var records = File.ReadLines(Path.Combine(run, MetricsLog.FileName)).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        AssertScalarsEqualMetrics(values, records, SftTags);
        Assert.Equal(4, values.Count(v => v.Tag == "train/loss"));
        Assert.Equal(3, values.Count(v => v.Tag == "eval/loss"));   // steps 0, 2 and 4

        var summary = JsonFile.ReadObject(Path.Combine(run, "summary.json"));
        Assert.Equal((float)(summary["planned_bytes"]!.GetValue<long>() / 1048576.0), Scalar(values, "memory/planned_peak_mb", 0));
        Assert.Equal((float)(summary["peak_rss_bytes"]!.GetValue<long>() / 1048576.0), Scalar(values, "memory/measured_peak_mb", 4));

        var config = values.Single(v => v.Tag == "config/text_summary");
        Assert.Equal(("text", 0L), (config.Plugin, config.Step));
        Assert.Contains("      \"method\": \"lora\",\n", config.Text);   // train-options.json (2-space JSON) as a markdown code block (4 more)
        var report = values.Single(v => v.Tag == "report/text_summary");
        Assert.Equal(File.ReadAllText(Path.Combine(run, "report.md")), report.Text);
        Assert.Equal(4L, report.Step);
        double now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Assert.All(values, v => Assert.InRange(v.WallTime, now - 3600, now + 1));   // Unix seconds, as TensorBoard reads them

        // Exact-match samples: every eval record holds the first prompts decoded, with what greedy decoding gave; the same
        // table goes to TensorBoard's text plugin at that step.
        var evalRecords = records.Where(r => r["eval_loss"] is not null).ToList();
        Assert.All(evalRecords, r =>
        {
            var samples = r["samples"]!.AsArray();
            Assert.Equal(Evaluator.SampleCount, samples.Count);
            Assert.All(samples, x => Assert.False(string.IsNullOrEmpty(x!["prompt"]!.GetValue<string>())));
            // An exact sample generated exactly the expected answer (then the end token, which decoding drops).
            Assert.All(samples.Where(x => x!["exact"]!.GetValue<bool>()), x => Assert.Equal(x!["expected"]!.GetValue<string>(), x["got"]!.GetValue<string>()));
            var text = values.Single(v => v.Tag == "eval/samples/text_summary" && v.Step == r["step"]!.GetValue<int>()).Text;
            Assert.Equal(TensorBoardReporter.SamplesMarkdown(samples), text);
            Assert.Contains(samples[0]!["expected"]!.GetValue<string>(), text);
        });
    }

    [Fact]
    public void DpoRunWritesItsRewardsAndPairsPerSecond()
    {
        string dir = TestPaths.TempDir(), run = Path.Combine(dir, "dpo"), pairs = PreferencePairs.Write(dir, 8);
        var (code, _, err) = CliCapture.Run("train", "--model", TestPaths.TinyLlama, "--method", "dpo", "--adapter-method", "lora", "--data", pairs,
            "--eval-file", pairs, "--steps", "2", "--eval-interval", "1000", "--batch", "4", "--max-seq", "32", "--out", run, "--report-to", "tensorboard");
        Assert.True(code == 0, err);
        var values = TensorBoardEvents.Values(Path.Combine(run, "tensorboard"));
        var records = File.ReadLines(Path.Combine(run, MetricsLog.FileName)).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        AssertScalarsEqualMetrics(values, records, [("loss", "train/loss"), ("rewards/margins", "train/rewards/margins"),
            ("rewards/accuracies", "train/rewards/accuracies"), ("pairs_per_s", "train/pairs_per_s"), ("eval_loss", "eval/loss"),
            ("eval_rewards/margins", "eval/rewards/margins")]);
        Assert.Equal(2, values.Count(v => v.Tag == "train/rewards/margins"));
        Assert.Contains(values, v => v.Tag == "report/text_summary" && v.Text == File.ReadAllText(Path.Combine(run, "report.md")));
    }

    [Fact]
    public void AnUnknownReporterIsRefusedBeforeTraining()
    {
        string dir = TestPaths.TempDir(), run = Path.Combine(dir, "run");
        var (code, _, err) = CliCapture.Run("train", "--model", TestPaths.TinyLlama, "--data", ReversalTask.Write(dir, 4), "--out", run, "--report-to", "tensorboard,wandb");
        Assert.Equal(1, code);
        Assert.Equal("error: --report-to: 'wandb' is not none or tensorboard", err.Trim());
        Assert.False(Directory.Exists(run));
    }

    /// <summary>For every record holding a field of <paramref name="tags"/>, TensorBoard has that figure (as float32) at that step.</summary>
    static void AssertScalarsEqualMetrics(List<TensorBoardValue> values, List<JsonObject> records, (string Field, string Tag)[] tags)
    {
        foreach (var (field, tag) in tags)
        {
            var expected = records.Where(r => r[field] is not null).Select(r => (Step: r["step"]!.GetValue<long>(), Value: (float)r[field]!.GetValue<double>())).ToList();
            Assert.True(expected.Count > 0, $"metrics.jsonl has no {field}");
            var got = values.Where(v => v.Tag == tag).Select(v => (v.Step, Value: v.Scalar!.Value)).ToList();
            Assert.Equal(expected, got);
        }
    }

    static float Scalar(List<TensorBoardValue> values, string tag, long step) => values.Single(v => v.Tag == tag && v.Step == step).Scalar!.Value;
}
