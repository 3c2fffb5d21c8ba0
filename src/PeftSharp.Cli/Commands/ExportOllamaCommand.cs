using System.ComponentModel;
using PeftSharp.Chat;
using PeftSharp.IO;
using PeftSharp.IO.Gguf;
using PeftSharp.Models;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft export ollama: a folder Ollama imports with `ollama create NAME -f DIR/Modelfile`: the GGUF (adapters merged
/// by default; with --separate-adapter the base GGUF plus a llama.cpp adapter GGUF) and a Modelfile with the chat
/// template as an Ollama Go template (known families) and the model's stop texts. Everything is written to a staging
/// folder first, so a failure leaves no partial output.
/// </summary>
public sealed class ExportOllamaCommand : Command<ExportOllamaCommand.Settings>
{
    public const string ModelFile = "model.gguf", AdapterFile = "adapter.gguf", ModelfileName = "Modelfile";

    public sealed class Settings : ExportSettings
    {
        [CommandOption("--model <DIR>")]
        [Description("Base Hugging Face model folder or Hub repo id ORG/NAME or ORG/NAME@REV")]
        public override string Model { get; set; } = "";

        [CommandOption("--adapter <DIR>")]
        [Description("Adapter folder (repeatable; DIR or DIR:WEIGHT): merged into the GGUF, or with --separate-adapter written as Ollama's ADAPTER")]
        public override string[] Adapters { get; set; } = [];

        [CommandOption("--out <DIR>")]
        [Description("Output folder for model.gguf, adapter.gguf (--separate-adapter) and Modelfile")]
        public override string Out { get; set; } = "";

        [CommandOption("--type <TYPE>")]
        [Description("Tensor type: f32, f16, bf16, q8_0, q4_0 or q4_K_M (default q4_K_M, as llama-quantize writes it)")]
        public override string Type { get; set; } = "q4_K_M";

        [CommandOption("--separate-adapter")]
        [Description("Keep the (one, LoRA) adapter separate: base model.gguf + adapter.gguf, Modelfile ADAPTER line")]
        public bool SeparateAdapter { get; set; }

        [CommandOption("--allow-base-mismatch")]
        [Description("Export even if an adapter's recorded base fingerprint differs from --model")]
        public override bool AllowBaseMismatch { get; set; }

        protected override ValidationResult ValidateMore() => SeparateAdapter && Adapters.Length != 1
            ? ValidationResult.Error($"--separate-adapter needs exactly one --adapter (got {Adapters.Length}); merge several with the default mode")
            : CliOptions.OutFolderIsAFile(Out) ?? ValidationResult.Success();
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        var fileType = s.FileType;
        var config = ModelConfig.Load(s.Model);
        GgufModelExport.ArchitectureOf(config, s.Model);
        string? separate = null;
        if (s.SeparateAdapter)
        {
            var spec = AdapterCli.Parse(s.Adapters)[0];
            if (spec.Weight != 1.0)
                throw new ArgumentException($"--adapter '{s.Adapters[0]}': an Ollama ADAPTER is applied at weight 1; drop the weight or leave out --separate-adapter to merge it");
            separate = spec.Dir;
            ExportGgufAdapterCommand.CheckExportable(s.Model, separate);
        }

        // The template the adapters were trained with, as `peft merge` carries it (also beside a separate ADAPTER).
        var template = ExportGgufCommand.ChatTemplateFor(s.Model, s.Adapters);
        var detected = template is null ? null : OllamaModelfile.Detect(template);
        var family = detected?.Family;
        List<string> stops;
        using (var tok = TextTokenizer.FromFolder(s.Model, config))
        {
            var names = tok.SpecialTokens.GroupBy(kv => kv.Value).ToDictionary(g => g.Key, g => g.First().Key);
            stops = tok.StopIds(config).Order().Select(id => names.GetValueOrDefault(id) ?? tok.Decode([id])).ToList();
        }

        string outDir = Path.GetFullPath(s.Out);
        // AtomicFile's temp name: a disk-full error inside names outDir's file, not the staging one.
        string staging = AtomicFile.TempPathFor(outDir);
        Directory.CreateDirectory(staging);
        using var cleanup = InterruptCleanup.Register(staging);   // Ctrl-C leaves no hidden staging folder
        try
        {
            if (separate is null) ExportGgufCommand.WriteMerged(s.Model, s.Adapters, s.AllowBaseMismatch, Path.Combine(staging, ModelFile), fileType, template);
            else
            {
                ExportGgufCommand.WriteMerged(s.Model, [], s.AllowBaseMismatch, Path.Combine(staging, ModelFile), fileType, template);
                ExportGgufAdapterCommand.WriteAdapter(s.Model, separate, s.AllowBaseMismatch, Path.Combine(staging, AdapterFile));
            }
            AtomicFile.WriteAllText(Path.Combine(staging, ModelfileName), OllamaModelfile.Write(ModelFile, separate is null ? null : AdapterFile, detected, stops));
            Directory.CreateDirectory(outDir);
            foreach (var f in Directory.GetFiles(staging)) File.Move(f, Path.Combine(outDir, Path.GetFileName(f)), overwrite: true);
        }
        finally { Directory.Delete(staging, recursive: true); }

        if (template is not null && family is null)
            Console.Error.WriteLine($"warning: {template.Source}: chat template is not one of the known families ({string.Join(", ", OllamaModelfile.Families.Select(f => f.Name))}); the Modelfile has no TEMPLATE, and Ollama does not run the GGUF's Jinja tokenizer.chat_template: it takes the built-in template whose Jinja text is nearest to it, else none (the raw prompt, no chat turns); add a TEMPLATE line by hand");
        string name = new string(Path.GetFileName(outDir).ToLowerInvariant().Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '-').ToArray());
        AnsiConsole.MarkupLine($"wrote {Markup.Escape(outDir)}: {ModelFile}{(separate is null ? "" : $" + {AdapterFile}")} ({s.Type}), {ModelfileName} (template: {family?.Name ?? "none"}{(detected?.DefaultSystem is null ? "" : ", with the template's default system text as SYSTEM")})");
        Console.WriteLine($"ollama create {name} -f {Path.Combine(outDir, ModelfileName)}");
        return 0;
    }
}
