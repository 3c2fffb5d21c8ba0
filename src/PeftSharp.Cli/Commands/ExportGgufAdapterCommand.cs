using System.ComponentModel;
using PeftSharp.IO;
using PeftSharp.IO.Gguf;
using PeftSharp.Models;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft export gguf-adapter: a LoRA adapter as a llama.cpp adapter GGUF (llama-cli --lora FILE, Ollama ADAPTER,
/// LLamaSharp LoadLoraFromFile), exact for rsLoRA, alpha_pattern and rank_pattern; run it on the base exported with
/// `peft export gguf`.
/// </summary>
public sealed class ExportGgufAdapterCommand : Command<ExportGgufAdapterCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--model <DIR>")]
        [Description("Base Hugging Face model folder or Hub repo id the adapter was trained on (llama or qwen2)")]
        public string Model { get; set; } = "";

        [CommandOption("--adapter <DIR>")]
        [Description("PEFT LoRA adapter folder")]
        public string Adapter { get; set; } = "";

        [CommandOption("--out <FILE>")]
        [Description("Output .gguf adapter file (written to a temp file, then renamed)")]
        public string Out { get; set; } = "";

        [CommandOption("--allow-base-mismatch")]
        [Description("Export even if the adapter's recorded base fingerprint differs from --model")]
        public bool AllowBaseMismatch { get; set; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Model)) return ValidationResult.Error("--model is required");
            if (string.IsNullOrWhiteSpace(Adapter)) return ValidationResult.Error("--adapter is required");
            if (string.IsNullOrWhiteSpace(Out)) return ValidationResult.Error("--out is required");
            if (HubCli.TryResolve(Model, "--model", out var folder) is { Successful: false } bad) return bad;
            Model = folder;
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        GgufModelExport.ArchitectureOf(ModelConfig.Load(s.Model), s.Model);
        if (PeftSharp.Tuners.PeftMethods.ForFolder(s.Adapter) is not PeftSharp.Tuners.Lora.LoraMethod)
            throw new InvalidDataException($"{Path.Combine(s.Adapter, "adapter_config.json")}: only LoRA adapters have a llama.cpp adapter form (Houlsby adapters and soft prompts do not)");
        var folder = PeftAdapterIO.Read(s.Adapter);
        if (folder.Config.UseDora)
            throw new InvalidDataException($"{Path.Combine(s.Adapter, "adapter_config.json")}: a DoRA adapter has no llama.cpp adapter form; use `peft export gguf --adapter {s.Adapter}` to export it merged");
        using var model = ModelLoader.Load(s.Model);
        var adapter = PeftAdapterIO.Load(model, folder, "gguf", s.AllowBaseMismatch);
        GgufAdapterExport.Write(model, adapter, s.Model, s.Adapter, s.Out, folder.RecordedBase?.ToJson().ToJsonString());
        AnsiConsole.MarkupLine($"wrote {Markup.Escape(s.Out)}: llama.cpp LoRA adapter for {Markup.Escape(s.Model)} (scale 1 reproduces PEFT)");
        return 0;
    }
}
