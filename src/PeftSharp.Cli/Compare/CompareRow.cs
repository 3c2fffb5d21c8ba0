using PeftSharp.IO;
using System.Globalization;
using System.Text.Json.Nodes;
using PeftSharp.Cli.Reports;
using PeftSharp.Training.Methods;

namespace PeftSharp.Cli.Compare;

/// <summary>One trained configuration of `peft compare`: what to run, and what its run folder measured.</summary>
public sealed record CompareRun(string Label, string Method, int? Rank, string? Targets)
{
    /// <summary>The LoRA family, and dpo/orpo whose result is a LoRA-family adapter (merged for the inference overhead).</summary>
    public bool IsLora => MethodOptions.IsLoraMethod(Method) || PeftSharp.Training.Preference.PreferenceOptions.IsPreferenceMethod(Method);
    /// <summary>A folder name for the run: the label without spaces or separators.</summary>
    public string Slug => string.Concat(Label.Select(c => char.IsLetterOrDigit(c) || c is '-' or '_' or '=' ? c : '_'));

    /// <summary>Every method, and for the LoRA family every rank x target set.</summary>
    public static List<CompareRun> Expand(IEnumerable<string> methods, IReadOnlyList<int> ranks, IReadOnlyList<string> targets)
    {
        var runs = new List<CompareRun>();
        bool sweep = ranks.Count > 1 || targets.Count > 1;
        foreach (var m in methods)
        {
            if (!MethodOptions.IsLoraMethod(m)) { runs.Add(new CompareRun(m, m, null, null)); continue; }
            foreach (var r in ranks)
                foreach (var t in targets)
                    runs.Add(new CompareRun(sweep ? $"{m} r={r} {t}" : m, m, r, t));
        }
        return runs;
    }
}

/// <summary>The measured row: read back from a train run's summary.json and metrics.jsonl, plus the inference overhead.</summary>
public sealed record CompareRow(CompareRun Run, long TrainableParams, long TotalParams, long PeakRssBytes, double? StepSeconds,
    double? ExactMatchAfter, double? EvalLossAfter, double? HeldoutLossBefore, double? HeldoutLossAfter, string? FinalDir)
{
    public double? InferenceOverhead { get; init; }
    public string InferenceMode => Run.Method is "adapter" or "prompt" ? "unmerged" : Run.Method == "full" ? "new weights" : "merged";
    public string? Error { get; init; }

    public static CompareRow Failed(CompareRun run, string error) => new(run, 0, 0, 0, null, null, null, null, null, null) { Error = error };

    public static CompareRow Read(CompareRun run, string runDir)
    {
        string summaryPath = Path.Combine(runDir, RunSummary.JsonFile);
        if (!File.Exists(summaryPath)) throw new FileNotFoundException($"{summaryPath}: not found (the run did not finish)", summaryPath);
        var j = JsonFile.ReadObject(summaryPath);
        double? D(string k) => j[k] is JsonValue v && v.TryGetValue<double>(out var d) ? d : null;
        long L(string k) => j[k] is JsonValue v && v.TryGetValue<long>(out var l) ? l : 0;
        return new CompareRow(run, L("trainable_params"), L("total_params"), L("peak_rss_bytes"), MedianStepSeconds(Path.Combine(runDir, "metrics.jsonl")),
            D("exact_match_after"), D("eval_loss_after"), D("heldout_loss_before"), D("heldout_loss_after"), j["final_dir"]?.GetValue<string>());
    }

    /// <summary>
    /// Median time between consecutive optimiser-step records of metrics.jsonl. The median drops the few steps that
    /// also ran an evaluation or a checkpoint save.
    /// </summary>
    public static double? MedianStepSeconds(string metricsPath)
    {
        if (!File.Exists(metricsPath)) return null;
        var elapsed = File.ReadLines(metricsPath).Where(l => l.Length > 0).Select(l => JsonNode.Parse(l) as JsonObject)
            .Where(o => o?["loss"] is not null && o["elapsed_s"] is not null).Select(o => o!["elapsed_s"]!.GetValue<double>()).ToList();
        var gaps = elapsed.Zip(elapsed.Skip(1), (a, b) => b - a).Order().ToList();
        if (gaps.Count == 0) return null;
        return gaps.Count % 2 == 1 ? gaps[gaps.Count / 2] : (gaps[gaps.Count / 2 - 1] + gaps[gaps.Count / 2]) / 2;
    }

    static string F(double? x, string format, double scale = 1) => x is double v ? (v * scale).ToString(format, CultureInfo.InvariantCulture) : "n/a";

    public static readonly string[] Header =
        ["method", "trainable params", "peak memory MB", "step time ms", "inference overhead", "exact match", "eval loss", "held-out ppl before -> after"];

    public string[] Cells() => Error is not null
        ? [Run.Label, $"failed: {Error}", "", "", "", "", "", ""]
        : [
            Run.Label,
            $"{TrainableParams:N0} ({F(TotalParams > 0 ? (double)TrainableParams / TotalParams : null, "P2")})",
            F(PeakRssBytes, "F1", 1e-6),
            F(StepSeconds, "F0", 1e3),
            InferenceOverhead is double o ? $"{o.ToString("+0.0%;-0.0%", CultureInfo.InvariantCulture)} ({InferenceMode})" : "n/a",
            F(ExactMatchAfter, "P1"),
            F(EvalLossAfter, "F4"),
            $"{F(HeldoutLossBefore is double b ? Math.Exp(b) : null, "F3")} -> {F(HeldoutLossAfter is double a ? Math.Exp(a) : null, "F3")}",
        ];

    public JsonObject Json() => new()
    {
        ["label"] = Run.Label, ["method"] = Run.Method, ["rank"] = Run.Rank, ["targets"] = Run.Targets, ["error"] = Error,
        ["trainable_params"] = TrainableParams, ["total_params"] = TotalParams, ["peak_rss_bytes"] = PeakRssBytes,
        ["step_seconds_median"] = StepSeconds, ["inference_overhead"] = InferenceOverhead, ["inference_mode"] = InferenceMode,
        ["exact_match_after"] = ExactMatchAfter, ["eval_loss_after"] = EvalLossAfter,
        ["heldout_ppl_before"] = HeldoutLossBefore is double b ? Math.Exp(b) : null, ["heldout_ppl_after"] = HeldoutLossAfter is double a ? Math.Exp(a) : null,
        ["final_dir"] = FinalDir,
    };
}
