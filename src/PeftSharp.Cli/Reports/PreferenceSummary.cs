using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.Cli.Commands;
using PeftSharp.Memory;
using PeftSharp.Training.Preference;
using Spectre.Console;
using static PeftSharp.Cli.Reports.ReportTables;

namespace PeftSharp.Cli.Reports;

/// <summary>
/// The end of a DPO/ORPO run, for the console, summary.json (the keys `peft compare` reads, plus the reward metrics) and
/// report.md: reward accuracy, margin, rewards and log-probs on the held-out pairs before and after, exact match of the
/// chosen answers, forgetting, and planned vs measured memory.
/// </summary>
internal sealed record PreferenceSummary(TrainSettings Settings, string Method, string? InitAdapter, string Reference, PreferenceData Data, MemoryPlan Plan,
    MeasuredMemory Measured, PreferenceTrainResult Result, double? HeldoutLossBefore, double? HeldoutLossAfter, TimeSpan Elapsed)
{
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
        WritePeakLine(Plan, Measured);
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
        AppendResults(sb, Rows);
        sb.AppendLine().AppendLine("![loss](loss.png)").AppendLine().AppendLine("![rewards](rewards.png)").AppendLine();
        AppendMemory(sb, Plan, Measured, "Planned by `peft plan` for the pair batch (2 x batch sequences; the reference pass runs first without grad and frees its " +
            "activations); measured as for SFT runs (weights and gradients from the tensors, optimiser state from its checkpoint, runtime " +
            "before loading, activations + buffers the rest of the peak resident set).");
        return sb.ToString();
    }
}
