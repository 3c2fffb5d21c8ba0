using System.ComponentModel;
using System.Globalization;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Training;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft eval: the base model and the base with the adapter(s), side by side on one data file: perplexity on the
/// trainable tokens (all of a text, the completions of prompt/completion pairs) and, for prompt/completion data,
/// exact-match accuracy of greedy answers.
/// </summary>
public sealed class EvalCommand : Command<EvalCommand.Settings>
{
    public sealed class Settings : ModelSettings
    {
        [CommandOption("--chat-template <FILE>")]
        [Description(ChatCli.TemplateOptionHelp)]
        public string? ChatTemplate { get; set; }

        [CommandOption("--data <FILE>")]
        [Description(".txt or .jsonl ({text} for perplexity; {prompt,completion} for perplexity and exact match; {prompt,chosen,rejected} or conversational pairs for reward accuracy)")]
        public string Data { get; set; } = "";

        [CommandOption("--adapter <DIR>")]
        [Description("Adapter folder (LoRA/DoRA, Houlsby, prompt tuning; repeatable; DIR, DIR:WEIGHT or NAME=DIR[[:WEIGHT]]; the brackets mean optional)")]
        public string[] Adapters { get; set; } = [];

        [CommandOption("--allow-base-mismatch")]
        public bool AllowBaseMismatch { get; set; }

        [CommandOption("--batch <N>")]
        [DefaultValue(8)]
        public int Batch { get; set; } = 8;

        [CommandOption("--max-seq <N>")]
        [DefaultValue(256)]
        public int MaxSeq { get; set; } = 256;

        [CommandOption("--beta <B>")]
        [Description("Preference data: the DPO beta of the implicit reward")]
        [DefaultValue(0.1)]
        public double Beta { get; set; } = 0.1;

        [CommandOption("--reference-adapter <DIR>")]
        [Description("Preference data: the reward's reference is base + this adapter (e.g. the SFT adapter a DPO run started from) instead of the base")]
        public string? ReferenceAdapter { get; set; }

        [CommandOption("--limit <N>")]
        [Description("Use only the first N examples")]
        public int? Limit { get; set; }

        public override ValidationResult Validate()
        {
            var r = base.Validate();
            if (!r.Successful) return r;
            if (string.IsNullOrEmpty(Data)) return ValidationResult.Error("--data is required");
            if (!File.Exists(Data)) return ValidationResult.Error($"--data: file '{Data}' not found");
            if (Batch <= 0) return ValidationResult.Error($"--batch must be positive (got {Batch})");
            if (MaxSeq <= 1) return ValidationResult.Error($"--max-seq must be at least 2 (got {MaxSeq})");
            if (Limit is <= 0) return ValidationResult.Error($"--limit must be positive (got {Limit})");
            if (ReferenceAdapter is not null && !Directory.Exists(ReferenceAdapter)) return ValidationResult.Error($"--reference-adapter: folder '{ReferenceAdapter}' not found");
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        using var model = s.LoadModel();
        using var tokenizer = TextTokenizer.FromFolder(s.Model, model.Config);
        if (PeftSharp.Training.Preference.PreferenceReader.IsPreferenceFile(s.Data)) return PreferenceEval.Execute(s, model, tokenizer);
        var chat = ChatCli.Prompter(s.Model, s.ChatTemplate);
        var (sequences, prompts, stats) = Load(s.Data, tokenizer, s.MaxSeq, s.Limit, chat);
        WarnOnLength(stats, sequences, s.MaxSeq, model.Config.MaxPositionEmbeddings);
        ChatCli.WarnOnTemplateMismatchIfUsed(chat, s.Adapters);
        var before = Evaluator.Run(model, sequences, prompts, tokenizer.EosId, s.Batch);
        var applied = AdapterCli.Apply(model, s.Adapters, s.AllowBaseMismatch);
        WarnOnSoftPrompt(applied, sequences, model.Config.MaxPositionEmbeddings);
        var after = s.Adapters.Length == 0 ? before : Evaluator.Run(model, sequences, prompts, tokenizer.EosId, s.Batch);
        Write(s.Data, sequences.Count, before, after, s.Adapters.Length > 0);
        return 0;
    }

    /// <summary>
    /// Every example of <paramref name="path"/> as an eval sequence, and the prompt/completion ones as exact-match prompts;
    /// with the file's counts (truncations included).
    /// </summary>
    internal static (IReadOnlyList<TokenSequence> Sequences, IReadOnlyList<PromptAnswer> Prompts, DataStats? Stats) Load(string path, TextTokenizer tokenizer, int maxSeq, int? limit = null,
        PeftSharp.Chat.ChatPrompter? chat = null)
    {
        // The file is both "train" (checked to have loss tokens) and eval (never packed, prompts kept) here.
        var data = TrainingData.Load(path, tokenizer, maxSeq, packing: false, evalPath: path, chat: chat);
        int n = limit ?? int.MaxValue;
        return (data.Eval.Take(n).ToList(), data.EvalPrompts.Take(n).ToList(), data.EvalStats);
    }

    /// <summary>
    /// The numbers cover only the first --max-seq tokens of a longer example (an example with nothing left to score is
    /// left out), and positions past the model's context were never trained: each changes the figures, so each is said
    /// (as train says them) rather than left silent.
    /// </summary>
    static void WarnOnLength(DataStats? stats, IReadOnlyList<TokenSequence> sequences, int maxSeq, int maxPositions)
    {
        if (stats is { Truncated: > 0 } st)
            AnsiConsole.MarkupLineInterpolated($"[yellow]warning[/]: {st.Truncated} example(s) longer than --max-seq {maxSeq} were truncated ({st.TokensCut} tokens cut): perplexity covers their first {maxSeq} tokens only");
        if (stats is { DroppedNoLoss: > 0 } sd)
            AnsiConsole.MarkupLineInterpolated($"[yellow]warning[/]: {sd.DroppedNoLoss} example(s) left out: nothing to score within --max-seq {maxSeq} (a prompt that fills it)");
        int longest = sequences.Select(t => t.Length).DefaultIfEmpty(0).Max();
        if (CliOptions.PastContext($"the longest eval sequence ({longest} tokens)", longest, maxPositions) is { } past)
            AnsiConsole.MarkupLineInterpolated($"[yellow]warning[/]: {past}; --max-seq {maxPositions} keeps within it");
    }

    /// <summary>A prompt-tuning adapter prepends its virtual tokens to every sequence: the run with it can pass the
    /// context where the base's did not.</summary>
    static void WarnOnSoftPrompt(AdapterCli.Applied applied, IReadOnlyList<TokenSequence> sequences, int maxPositions)
    {
        int prepended = applied.Adapters.Sum(a => a.Adapter.Config is PeftSharp.PromptTuningConfig p ? p.NumVirtualTokens : 0);
        int longest = sequences.Select(t => t.Length).DefaultIfEmpty(0).Max();
        if (prepended > 0 && longest <= maxPositions
            && CliOptions.PastContext($"with the adapter's {prepended} virtual tokens, the longest eval sequence ({longest + prepended} tokens)", longest + prepended, maxPositions) is { } past)
            AnsiConsole.MarkupLineInterpolated($"[yellow]warning[/]: {past}; --max-seq {maxPositions - prepended} keeps within it");
    }

    static void Write(string data, int examples, EvalResult before, EvalResult after, bool withAdapter)
    {
        static string Ppl(double loss) => double.IsFinite(loss) ? Math.Exp(loss).ToString("F3", CultureInfo.InvariantCulture) : "n/a";
        static string Pct(double? x) => x is double v ? v.ToString("P1", CultureInfo.InvariantCulture) : "n/a";
        var t = new Table().AddColumn("metric").AddColumn(new TableColumn("base").RightAligned());
        if (withAdapter) t.AddColumn(new TableColumn("with adapter").RightAligned());
        void Row(string name, string b, string a) { if (withAdapter) t.AddRow(name, b, a); else t.AddRow(name, b); }
        Row("loss (nats/token)", before.Loss.ToString("F4", CultureInfo.InvariantCulture), after.Loss.ToString("F4", CultureInfo.InvariantCulture));
        Row("perplexity", Ppl(before.Loss), Ppl(after.Loss));
        if (before.ExactMatch is not null) Row($"exact match ({before.Examples} prompts)", Pct(before.ExactMatch), Pct(after.ExactMatch));
        AnsiConsole.MarkupLineInterpolated($"[bold]eval[/] {data}: {examples} sequences");
        AnsiConsole.Write(t);
    }
}
