using System.ComponentModel;
using PeftSharp.IO;
using PeftSharp.Models;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft merge: folds LoRA/DoRA adapters into the base weights and writes a complete HF model folder (same files,
/// same dtypes as the base) that peft and Hugging Face load without any adapter code.
/// </summary>
public sealed class MergeCommand : Command<MergeCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--model <DIR>")]
        [Description("Base Hugging Face model folder or Hub repo id ORG/NAME or ORG/NAME@REV")]
        public string Model { get; set; } = "";

        [CommandOption("--adapter <DIR>")]
        [Description("Adapter folder to merge (repeatable; DIR, DIR:WEIGHT or NAME=DIR[[:WEIGHT]]; the brackets mean optional)")]
        public string[] Adapters { get; set; } = [];

        [CommandOption("--out <DIR>")]
        [Description("Output model folder (written atomically)")]
        public string Out { get; set; } = "";

        [CommandOption("--allow-base-mismatch")]
        [Description("Merge even if an adapter's recorded base fingerprint differs from --model")]
        public bool AllowBaseMismatch { get; set; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Model)) return ValidationResult.Error("--model is required");
            if (Adapters.Length == 0) return ValidationResult.Error("--adapter is required");
            if (string.IsNullOrWhiteSpace(Out)) return ValidationResult.Error("--out is required");
            if (HubCli.TryResolve(Model, "--model", out var folder) is { Successful: false } bad) return bad;
            Model = folder;
            if (Path.GetFullPath(Out).TrimEnd('/') == Path.GetFullPath(Model).TrimEnd('/'))
                return ValidationResult.Error("--out must differ from --model");
            return CliOptions.ModelOutFolder(Out);
        }
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        using var cleanup = InterruptCleanup.Register();   // Ctrl-C leaves no hidden temp file
        // fp32 for the merge arithmetic; the writer casts back to each tensor's dtype in the base files.
        using var model = ModelLoader.Load(s.Model);
        var applied = AdapterCli.Apply(model, s.Adapters, s.AllowBaseMismatch);
        // A model trained on chat with --chat-template carries that template, as the adapter recorded it (checked
        // before writing); otherwise an adapter trained on another rendering than the base's is warned about.
        string? template = PeftSharp.Chat.MergedChatTemplate.Choose(s.Model, applied.Lora.Select(a => a.Dir));
        if (template is null) ChatCli.WarnOnTemplateMismatch(s.Model, null, applied.Lora.Select(a => a.Dir));
        if (applied.Unmergeable is var (other, why))
            throw new InvalidOperationException($"--adapter '{other.Dir}': cannot be merged into the weights: {why}");
        var specs = applied.Adapters.Select(a => a.Spec).ToList();
        applied.MergeAndUnload();
        MergedModelWriter.Write(model, s.Model, s.Out, template is null ? null : tmp => PeftSharp.Chat.MergedChatTemplate.WriteInto(tmp, template));
        AnsiConsole.MarkupLine($"merged {string.Join(", ", specs.Select(x => Markup.Escape($"{x.Dir} (x{x.Weight})")))} into {Markup.Escape(s.Out)}");
        if (template is not null) AnsiConsole.MarkupLine("with the chat template the adapter was trained with (tokenizer_config.json chat_template)");
        return 0;
    }
}
