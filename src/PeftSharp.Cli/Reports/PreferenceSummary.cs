using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.Cli.Commands;
using PeftSharp.Memory;
using PeftSharp.Training.Preference;
using Spectre.Console;

namespace PeftSharp.Cli.Reports;

/// <summary>
/// The end of a DPO/ORPO run, for the console, summary.json (the keys `peft compare` reads, plus the reward metrics) and
/// report.md: reward accuracy, margin, rewards and log-probs on the held-out pairs before and after, exact match of the
/// chosen answers, forgetting, and planned vs measured memory.
/// </summary>
public sealed record PreferenceSummary(TrainSettings Settings, string Method, string? InitAdapter, string Reference, PreferenceData Data, MemoryPlan Plan,
    MeasuredMemory Measured, PreferenceTrainResult Result, double? HeldoutLossBefore, double? HeldoutLossAfter, TimeSpan Elapsed)
{
    static string Mb(long b) => (b / 1e6).ToString("F1", CultureInfo.InvariantCulture);
    static string Pct(double? x) => x is double v && double.IsFinite(v) ? v.ToString("P1", CultureInfo.InvariantCulture) : "n/a";
    static string F4(double? x) => x is double v && double.IsFinite(v) ? v.ToString("F4", CultureInfo.InvariantCulture) : "n/a";
    static string Ppl(double? loss) => loss is double l ? Math.Exp(l).ToString("F3", CultureInfo.InvariantCulture) : "n/a";
    static double? Finite(double? x) => x is double v && double.IsFinite(v) ? v : null;
    double PlanError => (Plan.TotalBytes - (double)Measured.Peak) / Measured.Peak;

    (string Name, string Before, string After)[] Rows
    {
        get
        {
            var (b, a) = (Result.FirstEval, Result.LastEval);
            return
            [
                ("reward accuracy (held-out pairs)", Pct(b?.Metrics.RewardAccuracy), Pct(a?.Metrics.RewardAccuracy)),
                ("reward margin", F4(b?.Metrics.RewardMargin), F4(a?.Metrics.RewardMargin)),
                ("policy prefers chosen (higher log-prob)", Pct(b?.Metrics.LogpAccuracy), Pct(a?.Metrics.LogpAccuracy)),
                ("chosen reward", F4(b?.Metrics.ChosenReward), F4(a?.Metrics.ChosenReward)),
                ("rejected reward", F4(b?.Metrics.RejectedReward), F4(a?.Metrics.RejectedReward)),
                ("chosen log-prob", F4(b?.Metrics.ChosenLogps), F4(a?.Metrics.ChosenLogps)),
                ("rejected log-prob", F4(b?.Metrics.RejectedLogps), F4(a?.Metrics.RejectedLogps)),
                ("eval loss", F4(b?.Loss), F4(a?.Loss)),
                ($"exact match of the chosen answer ({a?.ExactMatchExamples ?? 0} prompts)", Pct(b?.ExactMatch), Pct(a?.ExactMatch)),
                ("held-out perplexity (forgetting)", Ppl(HeldoutLossBefore), Ppl(HeldoutLossAfter)),
            ];
        }
    }

    public void WriteConsole()
    {
        var t = new Table().AddColumn("metric").AddColumn(new TableColumn("before").RightAligned()).AddColumn(new TableColumn("after").RightAligned());
        foreach (var (n, b, a) in Rows) t.AddRow(n, b, a);
        AnsiConsole.Write(t);
        AnsiConsole.MarkupLineInterpolated($"peak memory: planned {Mb(Plan.TotalBytes)} MB, measured {Mb(Measured.Peak)} MB ({PlanError:+0.0%;-0.0%})");
        AnsiConsole.MarkupLineInterpolated($"{Result.Steps} steps in {Elapsed.TotalSeconds:F0} s");
    }

    public JsonObject Json(long trainableParameters, long totalParameters)
    {
        var (b, a) = (Result.FirstEval, Result.LastEval);
        return new()
        {
            ["method"] = Settings.Method,
            ["adapter_method"] = Settings.AdapterMethod,
            ["description"] = Method,
            ["init_adapter"] = InitAdapter,
            ["reference"] = Reference,
            ["trainable_params"] = trainableParameters,
            ["total_params"] = totalParameters,
            ["steps"] = Result.Steps,
            ["elapsed_s"] = Elapsed.TotalSeconds,
            ["peak_rss_bytes"] = Measured.Peak,
            ["planned_bytes"] = Plan.TotalBytes,
            ["eval_loss_before"] = Finite(b?.Loss),
            ["eval_loss_after"] = Finite(a?.Loss),
            ["reward_accuracy_before"] = Finite(b?.Metrics.RewardAccuracy),
            ["reward_accuracy_after"] = Finite(a?.Metrics.RewardAccuracy),
            ["prefers_chosen_before"] = Finite(b?.Metrics.LogpAccuracy),
            ["prefers_chosen_after"] = Finite(a?.Metrics.LogpAccuracy),
            ["reward_margin_before"] = Finite(b?.Metrics.RewardMargin),
            ["reward_margin_after"] = Finite(a?.Metrics.RewardMargin),
            ["exact_match_before"] = Finite(b?.ExactMatch),
            ["exact_match_after"] = Finite(a?.ExactMatch),
            ["heldout_loss_before"] = Finite(HeldoutLossBefore),
            ["heldout_loss_after"] = Finite(HeldoutLossAfter),
            ["final_dir"] = Result.FinalDir,
        };
    }

    public string Markdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Preference tuning report").AppendLine();
        sb.AppendLine($"- method: {Settings.Method.ToUpperInvariant()} on {Method}");
        sb.AppendLine($"- initial adapter: {(InitAdapter is null ? "none (a fresh adapter)" : $"`{InitAdapter}`")}; reference: {Reference}");
        sb.AppendLine($"- base model: `{Settings.ModelDir}`");
        sb.AppendLine($"- data: `{Settings.DataFile}`: {Data.TrainStats}");
        if (Data.EvalStats is { } es) sb.AppendLine($"- held-out pairs: {es}");
        sb.AppendLine($"- steps: {Result.Steps}, wall time {Elapsed.TotalSeconds:F0} s");
        sb.AppendLine().AppendLine("## Results on the held-out pairs").AppendLine();
        sb.AppendLine("Rewards are TRL's implicit rewards: beta x (policy - reference) log-probs of the response for DPO, beta x the policy's " +
                      "mean log-prob for ORPO. Reward accuracy is the share of pairs whose chosen reward is strictly higher (a tie, as at the start " +
                      "of DPO where policy = reference, counts as wrong).").AppendLine();
        sb.AppendLine("| metric | before | after |").AppendLine("|---|---|---|");
        foreach (var (n, b, a) in Rows) sb.AppendLine($"| {n} | {b} | {a} |");
        sb.AppendLine().AppendLine("![loss](loss.png)").AppendLine().AppendLine("![rewards](rewards.png)").AppendLine();
        sb.AppendLine("## Memory: planned vs measured").AppendLine();
        sb.AppendLine("Planned by `peft plan` for the pair batch (2 x batch sequences; the reference pass runs first without grad and frees its " +
                      "activations); measured as for SFT runs (weights and gradients from the tensors, optimiser state from its checkpoint, runtime " +
                      "before loading, activations + buffers the rest of the peak resident set).").AppendLine();
        sb.AppendLine("| resident | planned MB | measured MB |").AppendLine("|---|---|---|");
        sb.AppendLine($"| weights | {Mb(Plan.WeightsBytes)} | {Mb(Measured.Weights)} |");
        sb.AppendLine($"| gradients | {Mb(Plan.GradientsBytes)} | {Mb(Measured.Gradients)} |");
        sb.AppendLine($"| optimizer state | {Mb(Plan.OptimizerBytes)} | {Mb(Measured.Optimizer)} |");
        sb.AppendLine($"| activations + buffers + runtime growth | {Mb(Plan.ActivationsBytes + Plan.LogitsBytes + Plan.DequantBufferBytes + Plan.RuntimeGrowthBytes)} | {Mb(Measured.ActivationsAndBuffers)} |");
        sb.AppendLine($"| runtime after load | {Mb(Plan.RuntimeAfterLoadBytes)} | {Mb(Measured.Runtime)} |");
        sb.AppendLine($"| total (peak RSS) | {Mb(Plan.TotalBytes)} | {Mb(Measured.Peak)} |");
        sb.AppendLine().AppendLine($"Peak error of the plan: {PlanError.ToString("+0.0%;-0.0%", CultureInfo.InvariantCulture)}.").AppendLine();
        sb.AppendLine("![memory](memory.png)");
        return sb.ToString();
    }
}
