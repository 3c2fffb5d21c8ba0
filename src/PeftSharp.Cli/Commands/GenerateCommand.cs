using System.ComponentModel;
using PeftSharp.Generation;
using PeftSharp.Models;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft generate: streams a completion of a prompt to the console. The prompt is encoded as HF's tokenizer(text)
/// encodes it (a BOS where the tokenizer adds one, so an empty prompt starts from BOS alone); the text printed after
/// it is decode(prompt + generated) minus decode(prompt). Sampling flags left out take their value from the model's
/// generation_config.json, else the defaults below.
/// </summary>
public sealed class GenerateCommand : Command<GenerateCommand.Settings>
{
    public sealed class Settings : ModelSettings
    {
        [CommandOption("--prompt <TEXT>")]
        [Description("The text to continue (may be empty where the tokenizer adds a BOS)")]
        public string? Prompt { get; set; }

        [CommandOption("--chat <FILE>")]
        [Description("A conversation to answer (JSON: [[{\"role\",\"content\"}, ...]] or {\"messages\": [[...]]}), rendered with the model's chat template")]
        public string? Chat { get; set; }

        [CommandOption("--chat-template <FILE>")]
        [Description(ChatCli.TemplateOptionHelp)]
        public string? ChatTemplate { get; set; }

        // Sampling options are null when not given, so generation_config.json can supply them.
        [CommandOption("--max-new-tokens <N>")]
        [Description("Default: generation_config.json's max_new_tokens, else 64")]
        public int? MaxNewTokens { get; set; }

        [CommandOption("--temperature <T>")]
        [Description("0 = greedy. Default: generation_config.json (do_sample false = greedy), else 0")]
        public double? Temperature { get; set; }

        [CommandOption("--top-p <P>")]
        [Description("Nucleus sampling mass in (0, 1]]. Default: generation_config.json, else 1 (off)")]
        public double? TopP { get; set; }

        [CommandOption("--top-k <K>")]
        [Description("Sample among the K most likely tokens. Default: generation_config.json, else 50 (Hugging Face's default; 0 = off)")]
        public int? TopK { get; set; }

        [CommandOption("--repetition-penalty <R>")]
        [Description("HF's repetition penalty (> 1 discourages repeats). Default: generation_config.json, else 1 (off)")]
        public double? RepetitionPenalty { get; set; }

        [CommandOption("--seed <S>")]
        public int? Seed { get; set; }

        [CommandOption("--adapter <DIR>")]
        [Description("Adapter folder to apply (repeatable; DIR, DIR:WEIGHT or NAME=DIR[[:WEIGHT]]; the brackets mean optional)")]
        public string[] Adapters { get; set; } = [];

        [CommandOption("--decode <PATH>")]
        [Description("auto (default): the C# batch-1 decode step where the model allows it, else the libtorch forward; torch: always the libtorch forward (also PEFTSHARP_DECODE=torch)")]
        public string Decode { get; set; } = "auto";

        [CommandOption("--verbose")]
        [Description("Say on stderr which decode path runs and why")]
        public bool Verbose { get; set; }

        [CommandOption("--allow-base-mismatch")]
        [Description("Apply an adapter even if its recorded base fingerprint differs (warns)")]
        public bool AllowBaseMismatch { get; set; }

        public override ValidationResult Validate()
        {
            var r = base.Validate();
            if (!r.Successful) return r;
            if ((Prompt is null) == (Chat is null)) return ValidationResult.Error("give one of --prompt TEXT or --chat FILE");
            if (Decode is not ("auto" or "torch")) return ValidationResult.Error($"--decode: '{Decode}' is not auto or torch");
            try { Given(new SamplingOptions()).Validate(); }
            catch (ArgumentException e) { return ValidationResult.Error(e.Message); }
            return ValidationResult.Success();
        }

        /// <summary>The flags the user gave, over <paramref name="defaults"/>.</summary>
        internal SamplingOptions Given(SamplingOptions defaults) => defaults with
        {
            MaxNewTokens = MaxNewTokens ?? defaults.MaxNewTokens,
            Temperature = Temperature ?? defaults.Temperature,
            TopP = TopP ?? defaults.TopP,
            TopK = TopK ?? defaults.TopK,
            RepetitionPenalty = RepetitionPenalty ?? defaults.RepetitionPenalty,
            Seed = Seed ?? defaults.Seed,
        };
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        using var model = s.LoadModel();
        AdapterCli.Apply(model, s.Adapters, s.AllowBaseMismatch);
        using var tok = TextTokenizer.FromFolder(s.Model, model.Config);
        var sampling = s.Given(tok.Generation.ApplyTo(new SamplingOptions()));
        sampling.Validate();
        var (text, stop) = GenerateInput.Resolve(s.Prompt, s.Chat, s.ChatTemplate, s.Model, tok, model.Config, s.Adapters);
        // A plain prompt is encoded as HF's tokenizer(text) (BOS where the tokenizer adds one); a rendered chat
        // already holds its special tokens, as apply_chat_template(tokenize=True) encodes it.
        var prompt = tok.Encode(text, addSpecialTokens: s.Chat is null);
        if (prompt.Length == 0) throw new ArgumentException("--prompt: the prompt is empty and this tokenizer adds no BOS to start from");
        sampling = WithinContext(sampling, prompt.Length, model.Config.MaxPositionEmbeddings, s.Chat is null ? "--prompt" : "--chat");
        var streamer = new TextStreamer(tok, prompt);
        Console.Write(text);
        var path = s.Decode == "torch" ? DecodePath.Torch : DecodePath.Auto;
        Action<string>? explain = s.Verbose ? line => Console.Error.WriteLine(line) : null;
        foreach (var id in TextGenerator.Generate(model, prompt, sampling, stop, path, explain))
        {
            if (cancellationToken.IsCancellationRequested) break;
            if (stop.Contains(id)) break;
            Console.Write(streamer.Push(id));
        }
        Console.WriteLine(streamer.Flush());
        return 0;
    }

    /// <summary>
    /// Generation ends where the model's context does, as `serve` and the IChatClient end it: past max_position_embeddings
    /// the decoder runs on positions it was never trained for. A prompt that fills the context is refused; more new tokens
    /// than the rest holds are cut to the rest, with a note.
    /// </summary>
    static SamplingOptions WithinContext(SamplingOptions sampling, int promptLength, int context, string source)
    {
        if (promptLength >= context)
            throw new ArgumentException($"{source}: the prompt is {promptLength} tokens; the model's context is {context}, which leaves no room for a new token");
        int rest = context - promptLength;
        if (sampling.MaxNewTokens <= rest) return sampling;
        Console.Error.WriteLine($"note: --max-new-tokens {sampling.MaxNewTokens}: the prompt ({promptLength} tokens) leaves {rest} of the model's context of {context}; generation stops there");
        return sampling with { MaxNewTokens = rest };
    }
}
