using System.Reflection;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli;

/// <summary>Builds the `peft` command tree. Each command lives in Commands/ as a Spectre Command&lt;Settings&gt;.</summary>
public static class CliApp
{
    public static int Run(string[] args)
    {
        // The library's warnings go to stderr, unless the host (a test harness, an app embedding the CLI) put its own there.
        if (PeftLogging.Logger is Microsoft.Extensions.Logging.Abstractions.NullLogger) PeftLogging.Logger = StderrWarnings.Instance;
        UnwrappedWhenRedirected(args);
        var app = new CommandApp();
        var settingsByCommand = new Dictionary<string, Type>();
        app.Configure(c => Configure(new RecordingConfigurator(c, settingsByCommand)));
        if ((CliOptions.MissingValue(args, settingsByCommand) ?? CliOptions.RepeatedFlag(args, settingsByCommand)) is { } flagError)
        {
            Console.Error.WriteLine($"error: {flagError}");
            return 1;
        }
        try
        {
            return app.Run(args);
        }
        catch (Exception e) when ((CliOptions.ExplainUnknownOption(e.Message, args, settingsByCommand) ?? CliOptions.ExplainConversionFailure(e.Message, args, settingsByCommand)) is { } why)
        {
            Console.Error.WriteLine($"error: {why}");
            return 1;
        }
        catch (Exception e)
        {
            // One line with the cause, non-zero exit: the contract of every command.
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    /// <summary>
    /// Spectre.Console wraps every line at 80 columns when stdout is not a terminal (no width to ask), which splits a long
    /// path in "wrote PATH: N bytes" over two lines for a script or a log reading it. Piped output gets a width no line
    /// reaches instead; tables still take their natural width and the progress bar its fixed 40 columns. Help keeps 80:
    /// its grid pads every line to the full width. COLUMNS, when set, is Spectre's own answer and kept.
    /// </summary>
    static void UnwrappedWhenRedirected(string[] args)
    {
        bool help = args.Length == 0 || args.Any(a => a is "-h" or "--help" or "-?" or "help");
        if (!help && Console.IsOutputRedirected && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("COLUMNS")))
            AnsiConsole.Profile.Width = 4096;
    }

    /// <summary>`peft --version`: the CLI assembly's informational version (without the source revision suffix).</summary>
    public static string Version =>
        (typeof(CliApp).Assembly.GetCustomAttribute<System.Reflection.AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0").Split('+')[0];

    public static void Configure(IConfigurator config)
    {
        config.SetApplicationName("peft");
        config.PropagateExceptions();
        config.Settings.Console = AnsiConsole.Console; // help and --version go where every command's output goes
        config.SetApplicationVersion(Version);
        config.Settings.StrictParsing = true;
        // COMMANDS (one line each; keep sorted by name)
        config.AddCommand<Commands.CompareCommand>("compare").WithDescription("Train every method on the same task and budget; table of parameters, memory, speed, overhead, accuracy, forgetting.");
        config.AddCommand<Commands.DashboardCommand>("dashboard").WithDescription("Live training page of a run folder (running or finished) or a compare folder, on 127.0.0.1 until Ctrl-C.");
        config.AddCommand<Commands.DownloadCommand>("download").WithDescription("Download a Hugging Face repo (ORG/NAME or ORG/NAME@REV) into the shared cache; prints the snapshot folder last.");
        config.AddCommand<Commands.EvalCommand>("eval").WithDescription("Perplexity and exact match of the base and with adapter(s), side by side.");
        config.AddCommand<Commands.GenerateCommand>("generate").WithDescription("Generate text from a prompt (KV cache, greedy or sampled, streamed).");
        config.AddBranch("export", export =>
        {
            export.SetDescription("Export for llama.cpp, Ollama, LM Studio, LLamaSharp: a model with adapters merged (gguf), a LoRA adapter (gguf-adapter), or a GGUF + Modelfile folder for `ollama create` (ollama).");
            export.AddCommand<Commands.ExportGgufCommand>("gguf").WithDescription("Write the base, or the base with LoRA/DoRA adapters merged, as a GGUF file (f32, f16, bf16, q8_0, q4_0, q4_K_M).");
            export.AddCommand<Commands.ExportOllamaCommand>("ollama").WithDescription("Write a folder for `ollama create`: the GGUF (adapters merged, or base + adapter GGUF) and a Modelfile (template, stops).");
            export.AddCommand<Commands.ExportGgufAdapterCommand>("gguf-adapter").WithDescription("Write a LoRA adapter as a llama.cpp adapter GGUF (--lora), exact for rsLoRA, alpha_pattern and rank_pattern.");
        });
        config.AddCommand<Commands.InspectCommand>("inspect").WithDescription("Show a model folder's architecture, shapes, parameter count, dtypes and size.");
        config.AddCommand<Commands.LogitsCommand>("logits").WithDescription("Compute logits for input_ids from a safetensors file (parity checks).");
        config.AddCommand<Commands.MakeDemoCommand>("make-demo").WithDescription("Regenerate the bundled demo data, tokenizer and base model");
        config.AddCommand<Commands.MergeCommand>("merge").WithDescription("Merge LoRA/DoRA adapters into the base weights and write a Hugging Face model folder.");
        config.AddCommand<Commands.TrainCommand>("train").WithDescription("Fine-tune (default: QLoRA on the bundled demo model and task): plan, progress, report, plots, resume.");
        config.AddCommand<Commands.PlanCommand>("plan").WithDescription("Memory and trainable parameters of a fine-tuning run (no GPU, no TorchSharp)");
        config.AddCommand<Commands.QuantizeCommand>("quantize").WithDescription("Quantise a model folder to bitsandbytes NF4/FP4 (double quantisation), streaming.");
        config.AddCommand<Commands.ServeCommand>("serve").WithDescription("OpenAI-compatible HTTP server: one base, many adapters, batched together.");
        config.AddCommand<Commands.TokenizeCommand>("tokenize").WithDescription("Print the token ids (and tokens) the model sees for a text, or for a conversation rendered with its chat template.");
    }
}
