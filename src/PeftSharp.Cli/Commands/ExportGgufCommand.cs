using System.ComponentModel;
using PeftSharp.IO.Gguf;
using PeftSharp.Models;
using PeftSharp.Tuners.Lora;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft export gguf: the base, or the base with LoRA/DoRA adapters merged exactly as <c>peft merge</c> merges them,
/// as one GGUF file for llama.cpp, Ollama, LM Studio and LLamaSharp.
/// </summary>
public sealed class ExportGgufCommand : Command<ExportGgufCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--model <DIR>")]
        [Description("Base Hugging Face model folder or Hub repo id ORG/NAME or ORG/NAME@REV (llama or qwen2)")]
        public string Model { get; set; } = "";

        [CommandOption("--adapter <DIR>")]
        [Description("Adapter folder to merge first (repeatable; DIR, DIR:WEIGHT or NAME=DIR[[:WEIGHT]]; the brackets mean optional)")]
        public string[] Adapters { get; set; } = [];

        [CommandOption("--out <FILE>")]
        [Description("Output .gguf file (written to a temp file, then renamed)")]
        public string Out { get; set; } = "";

        [CommandOption("--type <TYPE>")]
        [Description("Tensor type of the 2-D weights: f32, f16 or q8_0 (default f16); norms stay f32")]
        public string Type { get; set; } = "f16";

        [CommandOption("--allow-base-mismatch")]
        [Description("Merge even if an adapter's recorded base fingerprint differs from --model")]
        public bool AllowBaseMismatch { get; set; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Model)) return ValidationResult.Error("--model is required");
            if (string.IsNullOrWhiteSpace(Out)) return ValidationResult.Error("--out is required");
            try { GgufModelExport.ParseType(Type); }
            catch (ArgumentException e) { return ValidationResult.Error(e.Message); }
            if (HubCli.TryResolve(Model, "--model", out var folder) is { Successful: false } bad) return bad;
            Model = folder;
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        var fileType = GgufModelExport.ParseType(s.Type);
        // Refuse an unsupported architecture before loading weights or adapters.
        GgufModelExport.ArchitectureOf(ModelConfig.Load(s.Model), s.Model);
        using var model = ModelLoader.Load(s.Model);
        if (s.Adapters.Length > 0)
        {
            var applied = AdapterCli.Apply(model, s.Adapters, s.AllowBaseMismatch);
            if (applied.Unmergeable is var (other, why))
                throw new InvalidOperationException($"--adapter '{other.Dir}': cannot be merged into a GGUF: {why}");
            var lora = LoraModel.Of(model);
            foreach (var spec in applied.Lora) lora.MergeAndUnload(spec.Name);
        }
        GgufModelExport.Write(model, s.Model, s.Out, fileType, note => Console.Error.WriteLine($"note: {note}"));
        string merged = s.Adapters.Length > 0 ? $" with {string.Join(", ", s.Adapters.Select(Markup.Escape))} merged" : "";
        AnsiConsole.MarkupLine($"wrote {Markup.Escape(s.Out)} ({s.Type.ToLowerInvariant()}){merged}: {new FileInfo(s.Out).Length:N0} bytes");
        return 0;
    }
}
