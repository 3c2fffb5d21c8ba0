using System.Globalization;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Training.Preference;
using PeftSharp.Tuners.Lora;
using Spectre.Console;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// `peft eval` on preference data ({"prompt","chosen","rejected"} or conversational pairs): for the base and for the base
/// with the adapter(s), the share of pairs whose chosen response has the higher log-prob; for the adapter, TRL's DPO
/// reward accuracy and margin against the reference (the base, or base + --reference-adapter, e.g. the SFT adapter a
/// DPO run started from), and exact match of the chosen answers.
/// </summary>
public static class PreferenceEval
{
    public static int Execute(EvalCommand.Settings s, CausalLM model, TextTokenizer tokenizer)
    {
        var chat = ChatCli.Prompter(s.Model, s.ChatTemplate);
        var data = PreferenceData.Load(s.Data, tokenizer, s.MaxSeq, evalPath: s.Data, chat: chat);
        ChatCli.WarnOnTemplateMismatchIfUsed(chat, s.Adapters);
        int n = s.Limit ?? int.MaxValue;
        var pairs = data.Eval.Take(n).ToList();
        var prompts = data.EvalPrompts.Take(n).ToList();
        var options = new PreferenceOptions { Beta = s.Beta };
        options.Validate();

        var baseline = PreferenceEvaluator.Run(model, null, new PreferenceObjective(options, new ReferenceModel(model)), pairs, prompts, tokenizer.EosId, s.Batch);
        string? frozen = null;
        if (s.ReferenceAdapter is { } refDir)
        {
            PeftAdapterIO.Load(model, refDir, PreferenceSetup.ReferenceAdapter, s.AllowBaseMismatch);
            frozen = PreferenceSetup.ReferenceAdapter;
        }
        var applied = AdapterCli.Apply(model, s.Adapters, s.AllowBaseMismatch);
        if (applied.Other.Count > 0)
            throw new ArgumentException("--adapter: preference evaluation scores LoRA/DoRA adapters (the reference is the model with them switched off)");
        if (applied.Lora.Count == 0 && frozen is not null) LoraModel.Of(model).DisableAll();   // the base against the reference adapter
        var reference = new ReferenceModel(model, frozen);
        var adapted = PreferenceEvaluator.Run(model, null, new PreferenceObjective(options, reference), pairs, prompts, tokenizer.EosId, s.Batch);

        static string Pct(double? x) => x is double v && double.IsFinite(v) ? v.ToString("P1", CultureInfo.InvariantCulture) : "n/a";
        static string F4(double x) => x.ToString("F4", CultureInfo.InvariantCulture);
        bool withAdapter = s.Adapters.Length > 0;
        var t = new Table().AddColumn("metric").AddColumn(new TableColumn("base").RightAligned());
        if (withAdapter) t.AddColumn(new TableColumn("with adapter").RightAligned());
        void Row(string name, string b, string a) { if (withAdapter) t.AddRow(name, b, a); else t.AddRow(name, b); }
        Row("prefers chosen (higher log-prob)", Pct(baseline.Metrics.LogpAccuracy), Pct(adapted.Metrics.LogpAccuracy));
        Row("log-prob chosen / rejected", $"{F4(baseline.Metrics.ChosenLogps)} / {F4(baseline.Metrics.RejectedLogps)}", $"{F4(adapted.Metrics.ChosenLogps)} / {F4(adapted.Metrics.RejectedLogps)}");
        if (prompts.Count > 0) Row($"exact match of chosen ({baseline.ExactMatchExamples} prompts)", Pct(baseline.ExactMatch), Pct(adapted.ExactMatch));
        AnsiConsole.MarkupLineInterpolated($"[bold]eval[/] {s.Data}: {data.EvalStats}");
        AnsiConsole.Write(t);
        if (withAdapter || frozen is not null)
            AnsiConsole.MarkupLineInterpolated($"reward accuracy {Pct(adapted.RewardAccuracy)}, margin {F4(adapted.Metrics.RewardMargin)} (beta {s.Beta}; chosen {F4(adapted.Metrics.ChosenReward)}, rejected {F4(adapted.Metrics.RejectedReward)}) against {reference.Description}");
        return 0;
    }
}
