using System.ComponentModel;
using PeftSharp.IO.Gguf;
using PeftSharp.Models;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft export gguf: the base, or the base with LoRA/DoRA adapters merged exactly as <c>peft merge</c> merges them,
/// as one GGUF file for llama.cpp, Ollama, LM Studio and LLamaSharp.
/// </summary>
public sealed class ExportGgufCommand : Command<ExportGgufCommand.Settings>
{
    public sealed class Settings : ExportSettings
    {
        [CommandOption("--model <DIR>")]
        [Description("Base Hugging Face model folder, Hub repo id ORG/NAME[[@REV]] or .gguf file (llama, mistral, qwen2, qwen3, phi3, gemma2)")]
        public override string Model { get; set; } = "";

        [CommandOption("--adapter <DIR>")]
        [Description("Adapter folder to merge first (repeatable; DIR, DIR:WEIGHT or NAME=DIR[[:WEIGHT]]; the brackets mean optional)")]
        public override string[] Adapters { get; set; } = [];

        [CommandOption("--out <FILE>")]
        [Description("Output .gguf file (written to a temp file, then renamed)")]
        public override string Out { get; set; } = "";

        [CommandOption("--type <TYPE>")]
        [Description("Tensor type of the 2-D weights: f32, f16, bf16, q8_0 (as convert_hf_to_gguf.py writes them), q4_0 or q4_K_M (as llama-quantize writes them, per-tensor choices included); default f16; norms stay f32")]
        public override string Type { get; set; } = "f16";

        [CommandOption("--allow-base-mismatch")]
        [Description("Merge even if an adapter's recorded base fingerprint differs from --model")]
        public override bool AllowBaseMismatch { get; set; }

        protected override ValidationResult ValidateMore() => CliOptions.OutFileIsAFolder(Out) ?? ValidationResult.Success();
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        using var cleanup = InterruptCleanup.Register();   // Ctrl-C leaves no hidden temp file
        WriteMerged(s.Model, s.Adapters, s.AllowBaseMismatch, s.Out, s.FileType, ChatTemplateFor(s.Model, s.Adapters));
        string merged = s.Adapters.Length > 0 ? $" with {string.Join(", ", s.Adapters.Select(Markup.Escape))} merged" : "";
        AnsiConsole.MarkupLine($"wrote {Markup.Escape(s.Out)} ({s.Type.ToLowerInvariant()}){merged}: {new FileInfo(s.Out).Length:N0} bytes");
        return 0;
    }

    /// <summary>
    /// The base with <paramref name="adapters"/> merged (as `peft merge` merges them) written as a GGUF; shared with
    /// `export ollama`. Its chat template is <paramref name="chatTemplate"/> (see <see cref="ChatTemplateFor"/>).
    /// </summary>
    internal static void WriteMerged(string modelDir, string[] adapters, bool allowBaseMismatch, string outPath, GgufFileType fileType,
        PeftSharp.Chat.ChatTemplate? chatTemplate)
    {
        // Refuse an unsupported architecture before loading weights or adapters.
        GgufModelExport.ArchitectureOf(ModelConfig.Load(modelDir), modelDir);
        using var model = ModelLoader.Load(modelDir);
        if (adapters.Length > 0)
        {
            var applied = AdapterCli.Apply(model, adapters, allowBaseMismatch);
            if (applied.Unmergeable is var (other, why))
                throw new InvalidOperationException($"--adapter '{other.Dir}': cannot be merged into a GGUF: {why}");
            applied.MergeAndUnload();
        }
        GgufModelExport.Write(model, modelDir, outPath, fileType, chatTemplate, note => Console.Error.WriteLine($"note: {note}"));
    }

    /// <summary>
    /// The chat template an export of <paramref name="modelDir"/> with <paramref name="adapters"/> carries, as `peft
    /// merge` writes it: the one an adapter was trained with (--chat-template), else the base's, with merge's warning
    /// when an adapter learned another rendering than that.
    /// </summary>
    internal static PeftSharp.Chat.ChatTemplate? ChatTemplateFor(string modelDir, IEnumerable<string> adapters)
    {
        var dirs = AdapterCli.Parse(adapters.ToList()).Select(a => a.Dir).ToList();
        var (template, fromAdapter) = PeftSharp.Chat.MergedChatTemplate.ForExport(modelDir, dirs);
        if (!fromAdapter) ChatCli.WarnOnTemplateMismatch(modelDir, null, dirs);
        return template;
    }
}
