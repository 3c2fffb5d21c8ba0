using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.Cli.Commands;
using PeftSharp.Data;
using PeftSharp.Memory;
using PeftSharp.Training;
using Spectre.Console;
using static PeftSharp.Cli.Reports.ReportTables;

namespace PeftSharp.Cli.Reports;

/// <summary>The end of a training run, for the console and for report.md.</summary>
internal sealed record RunSummary(TrainSettings Settings, string Method, TrainingData Data, MemoryPlan Plan, MeasuredMemory Measured,
    TrainResult Result, double? HeldoutLossBefore, double? HeldoutLossAfter, TimeSpan Elapsed, IReadOnlyList<JsonObject> Records)
{
    /// <summary>The before/after rows of report.md.</summary>
    IEnumerable<(string Name, string Before, string After)> Rows
    {
        get
        {
            if (Result.FirstEval is null) yield return ("eval", "none", NoEvalHint);
            else
            {
                yield return ("exact-match accuracy", Pct(Result.FirstEval.ExactMatch), Pct(Result.LastEval?.ExactMatch));
                yield return ("eval loss", F4(Result.FirstEval.Loss), F4(Result.LastEval?.Loss));
            }
            if (HoldoutKnown) yield return ("held-out perplexity (forgetting)", Ppl(HeldoutLossBefore), Ppl(HeldoutLossAfter));
        }
    }

    /// <summary>Steps this process ran (a resumed run's records start after its checkpoint).</summary>
    int StepsHere => Records.Count(r => r["tokens_per_s"] is not null);

    /// <summary>"300 steps", or for a resumed run "300 steps (the last 60 in this process, resumed at step 240)": the time
    /// and tokens/s beside it are this process's.</summary>
    string StepsText => StepsHere < Result.Steps && StepsHere > 0
        ? $"{Result.Steps} steps (the last {StepsHere} in this process, resumed at step {Result.Steps - StepsHere})"
        : $"{Result.Steps} steps";

    /// <summary>The steps' tokens over the steps' time (each step's time is its tokens over its tokens/s): a mean of the
    /// per-step rates would weigh a short step's rate like a long one's.</summary>
    double TokensPerSecond
    {
        get
        {
            double tokens = 0, seconds = 0;
            foreach (var r in Records)
                if (r["tokens"] is { } n && r["tokens_per_s"] is { } rate && Number(rate) > 0)
                {
                    tokens += Number(n);
                    seconds += Number(n) / Number(rate);
                }
            return seconds > 0 ? tokens / seconds : 0;
        }
    }

    /// <summary>A record's number whether it was written here (a long or a double) or read back from metrics.jsonl.</summary>
    static double Number(System.Text.Json.Nodes.JsonNode n) => double.Parse(n.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture);

    public void WriteConsole()
    {
        var t = new Table().AddColumn("resident").AddColumn(new TableColumn("planned MB").RightAligned()).AddColumn(new TableColumn("measured MB").RightAligned());
        foreach (var (n, p, m) in MemoryRows(Plan, Measured)) t.AddRow(n, Mb(p), Mb(m));
        AnsiConsole.Write(t);
        WritePeakLine(Plan, Measured);
        if (Result.FirstEval is null)
            AnsiConsole.MarkupLineInterpolated($"eval: none ({NoEvalHint})");
        else
        {
            AnsiConsole.MarkupLineInterpolated($"exact-match accuracy: before {Pct(Result.FirstEval.ExactMatch)}, after {Pct(Result.LastEval?.ExactMatch)}");
            AnsiConsole.MarkupLineInterpolated($"eval loss: before {F4(Result.FirstEval.Loss)}, after {F4(Result.LastEval?.Loss)}");
        }
        if (HoldoutKnown) AnsiConsole.MarkupLineInterpolated($"held-out perplexity (forgetting): before {Ppl(HeldoutLossBefore)}, after {Ppl(HeldoutLossAfter)}");
        AnsiConsole.MarkupLineInterpolated($"{StepsText} in {Elapsed.TotalSeconds:F0} s ({TokensPerSecond:F0} tokens/s)");
    }

    bool HoldoutKnown => HeldoutLossBefore is not null;

    /// <summary>What to pass for a before/after evaluation when a run had no eval data.</summary>
    const string NoEvalHint = "no eval data: --eval-file FILE, or --eval-split 0.1 to hold out part of --data, measures loss and exact match before and after";

    /// <summary>summary.json beside report.md: the run's results for tools (peft compare reads it).</summary>
    public const string JsonFile = "summary.json";

    public JsonObject Json(long trainableParameters, long totalParameters) => new()
    {
        ["method"] = Settings.Method,
        ["description"] = Method,
        ["data"] = Settings.DataFile,                  // the file trained on (the demo's when --data was left out)
        ["data_stats"] = Data.TrainStats.ToString(),
        ["compute_dtype"] = Settings.ComputeDtype,   // what ran (auto resolved before training)
        ["trainable_params"] = trainableParameters,
        ["total_params"] = totalParameters,
        ["steps"] = Result.Steps,
        ["elapsed_s"] = Elapsed.TotalSeconds,
        ["peak_rss_bytes"] = Measured.Peak,
        ["planned_bytes"] = Plan.TotalBytes,
        ["runtime_bytes"] = Measured.Runtime, // resident once libtorch loaded: the plan's first runtime term on CPU
        ["eval_loss_before"] = Finite(Result.FirstEval?.Loss),
        ["eval_loss_after"] = Finite(Result.LastEval?.Loss),
        ["exact_match_before"] = Finite(Result.FirstEval?.ExactMatch),
        ["exact_match_after"] = Finite(Result.LastEval?.ExactMatch),
        ["heldout_loss_before"] = Finite(HeldoutLossBefore),
        ["heldout_loss_after"] = Finite(HeldoutLossAfter),
        ["final_dir"] = Result.FinalDir,
    };

    public string Markdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Training report").AppendLine();
        sb.AppendLine($"- method: {Method}");
        sb.AppendLine($"- compute dtype: {Settings.ComputeDtype} (base and activations; adapters, gradients, optimiser state and loss in fp32)");
        sb.AppendLine($"- base model: `{Settings.ModelDir}`");
        sb.AppendLine($"- data: `{Settings.DataFile}`: {Data.TrainStats}");
        if (Data.EvalStats is { } es) sb.AppendLine($"- eval: {es}");
        sb.AppendLine($"- steps: {StepsText}, wall time {Elapsed.TotalSeconds:F0} s, {TokensPerSecond:F0} tokens/s over the steps' time");
        sb.AppendLine().AppendLine("## Results").AppendLine();
        AppendResults(sb, Rows);
        sb.AppendLine().AppendLine("![loss](loss.png)").AppendLine();
        AppendMemory(sb, Plan, Measured, "Planned by `peft plan` for this run before it started; measured: weights and gradients from the tensors, optimiser " +
            "state from its checkpoint, runtime from the resident set before loading, activations + buffers as the rest of the peak resident set (VmHWM).");
        return sb.ToString();
    }
}
