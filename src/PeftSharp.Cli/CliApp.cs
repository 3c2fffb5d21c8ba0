using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli;

/// <summary>Builds the `peft` command tree. Each command lives in Commands/ as a Spectre Command&lt;Settings&gt;.</summary>
public static class CliApp
{
    public static int Run(string[] args)
    {
        var app = new CommandApp();
        app.Configure(Configure);
        try
        {
            return app.Run(args);
        }
        catch (Exception e)
        {
            // One line with the cause, non-zero exit: the contract of every command.
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    public static void Configure(IConfigurator config)
    {
        config.SetApplicationName("peft");
        config.PropagateExceptions();
        // COMMANDS (one line each; keep sorted by name)
        config.AddCommand<Commands.CompareCommand>("compare").WithDescription("Train every method on the same task and budget; table of parameters, memory, speed, overhead, accuracy, forgetting.");
        config.AddCommand<Commands.EvalCommand>("eval").WithDescription("Perplexity and exact match of the base and with adapter(s), side by side.");
        config.AddCommand<Commands.GenerateCommand>("generate").WithDescription("Generate text from a prompt (KV cache, greedy or sampled, streamed).");
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
