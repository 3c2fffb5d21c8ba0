using System.ComponentModel;
using PeftSharp.Chat;
using PeftSharp.IO;
using PeftSharp.IO.Gguf;
using PeftSharp.Models;
using PeftSharp.Tuners.Lora;
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
            if (CliOptions.OutFileIsAFolder(Out) is { } outIsFolder) return outIsFolder;
            if (HubCli.TryResolve(Model, "--model", out var folder) is { Successful: false } bad) return bad;
            Model = folder;
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        using var cleanup = InterruptCleanup.Register();   // Ctrl-C leaves no hidden temp file
        WriteAdapter(s.Model, s.Adapter, s.AllowBaseMismatch, s.Out);
        AnsiConsole.MarkupLine($"wrote {Markup.Escape(s.Out)}: llama.cpp LoRA adapter for {Markup.Escape(s.Model)} (scale 1 reproduces PEFT)");
        if (ChatTemplateMismatch(s.Model, s.Adapter) is { } warning) Console.Error.WriteLine($"warning: {warning}");
        return 0;
    }

    /// <summary>
    /// The adapter GGUF runs on the base GGUF, and llama.cpp and Ollama render chat with that file's
    /// tokenizer.chat_template: --model's template (a .gguf's own, or the one `peft export gguf` writes from the folder).
    /// An adapter trained with another (its chat record, else a template saved in its folder, as PEFT and
    /// TRL leave tokenizer_config.json beside the adapter) would be prompted in a format it did not learn: one line
    /// saying so, or null when they agree or the adapter names no template.
    /// </summary>
    internal static string? ChatTemplateMismatch(string modelDir, string adapterDir)
    {
        (string? Sha, string Source)? trained;
        string? baseSha;
        string baseSource;
        try
        {
            trained = AdapterChatRecord.Trained(adapterDir) is { } record ? (record.TemplateSha256, record.TemplateSource) : null;
            if (trained is null) return null;
            var template = ChatTemplate.Load(modelDir);
            (baseSha, baseSource) = (template?.Sha256, template?.Source ?? "");
        }
        catch (InvalidDataException e) { return $"cannot compare the adapter's chat template with the base's: {e.Message}"; }
        if (trained.Value.Sha == baseSha) return null;
        string trainedWith = trained.Value.Sha is { } sha ? $"chat template {trained.Value.Source} (sha256 {sha[..12]})" : "PeftSharp's simple chat format (no template)";
        string baseHas = baseSha is null ? "absent" : $"{baseSource} (sha256 {baseSha[..12]})";
        return $"{adapterDir} was trained with {trainedWith} but the base GGUF's tokenizer.chat_template is {baseHas}; llama.cpp and Ollama " +
               "render chat with the base GGUF's, so its replies may not follow the format it learned (llama.cpp: --chat-template-file with the adapter's template)";
    }

    /// <summary>Refuses what has no llama.cpp adapter form (naming adapter_config.json), before any weights load.</summary>
    internal static void CheckExportable(string modelDir, string adapterDir)
    {
        GgufModelExport.ArchitectureOf(ModelConfig.Load(modelDir), modelDir);
        if (PeftSharp.Tuners.PeftMethods.ForFolder(adapterDir) is not PeftSharp.Tuners.Lora.LoraMethod)
            throw new InvalidDataException($"{Path.Combine(adapterDir, AdapterFolderFiles.ConfigFile)}: only LoRA adapters have a llama.cpp adapter form (Houlsby adapters and soft prompts do not)");
        var config = PeftAdapterIO.Read(adapterDir).Config;
        if (config.UseDora)
            throw new InvalidDataException($"{Path.Combine(adapterDir, AdapterFolderFiles.ConfigFile)}: a DoRA adapter has no llama.cpp adapter form; use `peft export gguf --adapter {adapterDir}` to export it merged");
        // llama.cpp adds s·B·A to the base GGUF's weights; a PiSSA adapter's B·A belongs over the residual base, so on
        // the unchanged base its principal part would count twice, silently.
        if (config.IsPissa)
            throw new InvalidDataException($"{Path.Combine(adapterDir, AdapterFolderFiles.ConfigFile)}: a PiSSA adapter (init_lora_weights \"pissa\") holds its update over the residual base, which llama.cpp does not make; use `peft export gguf --adapter {adapterDir}` to export it merged");
    }

    /// <summary>The adapter as a llama.cpp adapter GGUF; shared with `export ollama --separate-adapter`.</summary>
    internal static void WriteAdapter(string modelDir, string adapterDir, bool allowBaseMismatch, string outPath)
    {
        CheckExportable(modelDir, adapterDir);
        var folder = PeftAdapterIO.Read(adapterDir);
        using var model = ModelLoader.Load(modelDir);
        var adapter = PeftAdapterIO.Load(model, folder, "gguf", allowBaseMismatch);
        LoraGgufExport.Write(model, adapter, modelDir, adapterDir, outPath, folder.RecordedBase?.ToJson().ToJsonString());
    }
}
