using System.ComponentModel;
using PeftSharp.Generation;
using PeftSharp.Models;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>peft generate: streams a completion of a prompt to the console.</summary>
public sealed class GenerateCommand : Command<GenerateCommand.Settings>
{
    public sealed class Settings : ModelSettings
    {
        [CommandOption("--prompt <TEXT>")]
        [Description("The text to continue")]
        public string? Prompt { get; set; }

        [CommandOption("--chat <FILE>")]
        [Description("A conversation to answer (JSON: [[{\"role\",\"content\"}, ...]] or {\"messages\": [[...]]}), rendered with the model's chat template")]
        public string? Chat { get; set; }

        [CommandOption("--chat-template <FILE>")]
        [Description(ChatCli.TemplateOptionHelp)]
        public string? ChatTemplate { get; set; }

        [CommandOption("--max-new-tokens <N>")]
        [DefaultValue(64)]
        public int MaxNewTokens { get; set; } = 64;

        [CommandOption("--temperature <T>")]
        [Description("0 = greedy (default)")]
        [DefaultValue(0.0)]
        public double Temperature { get; set; }

        [CommandOption("--top-p <P>")]
        [DefaultValue(1.0)]
        public double TopP { get; set; } = 1.0;

        [CommandOption("--seed <S>")]
        public int? Seed { get; set; }

        [CommandOption("--adapter <DIR>")]
        [Description("Adapter folder to apply (repeatable; DIR, DIR:WEIGHT or NAME=DIR[:WEIGHT])")]
        public string[] Adapters { get; set; } = [];

        [CommandOption("--allow-base-mismatch")]
        [Description("Apply an adapter even if its recorded base fingerprint differs (warns)")]
        public bool AllowBaseMismatch { get; set; }

        public override ValidationResult Validate()
        {
            var r = base.Validate();
            if (!r.Successful) return r;
            if ((Prompt is null) == (Chat is null)) return ValidationResult.Error("give one of --prompt TEXT or --chat FILE");
            try { Sampling.Validate(); }
            catch (ArgumentException e) { return ValidationResult.Error(e.Message); }
            return ValidationResult.Success();
        }

        public SamplingOptions Sampling => new() { MaxNewTokens = MaxNewTokens, Temperature = Temperature, TopP = TopP, Seed = Seed };
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        using var model = s.LoadModel();
        var applied = AdapterCli.Apply(model, s.Adapters, s.AllowBaseMismatch);
        using var tok = TextTokenizer.FromFolder(s.Model, model.Config);
        var (text, stop) = GenerateInput.Resolve(s.Prompt, s.Chat, s.ChatTemplate, s.Model, tok, model.Config, s.Adapters);
        var prompt = tok.Encode(text);
        var streamer = new TextStreamer(tok);
        Console.Write(text);
        foreach (var id in TextGenerator.Generate(model, prompt, s.Sampling, stop, applied.GenerationPrefix))
        {
            if (cancellationToken.IsCancellationRequested) break;
            if (stop.Contains(id)) break;
            Console.Write(streamer.Push(id));
        }
        Console.WriteLine(streamer.Flush());
        return 0;
    }
}
