using System.ComponentModel;
using PeftSharp.Demo;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>`peft make-demo`: regenerates the bundled demo data, tokenizer and (with --pretrain) the base model.</summary>
public sealed class MakeDemoCommand : Command<MakeDemoCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--out <DIR>")]
        [Description("Folder to write the demo into.")]
        [DefaultValue("assets/demo")]
        public string Out { get; init; } = "assets/demo";

        [CommandOption("--pretrain")]
        [Description("Also pretrain the base model (full fine-tuning from random weights) and write base/model.safetensors.")]
        public bool Pretrain { get; init; }

        [CommandOption("--steps <N>")]
        [Description("Pretraining steps.")]
        [DefaultValue(DefaultPretrainSteps)]
        public int Steps { get; init; } = DefaultPretrainSteps;
    }

    public const int DefaultPretrainSteps = 300;

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (settings.Steps < 1) throw new ArgumentException($"--steps {settings.Steps} must be at least 1");
        DemoAssets.WriteData(settings.Out);
        Console.WriteLine($"wrote demo data and tokenizer to {settings.Out}");
        if (!settings.Pretrain) return 0;
        var r = DemoAssets.Pretrain(settings.Out, settings.Steps, Console.WriteLine, rec =>
        {
            int step = rec["step"]!.GetValue<int>();
            if (rec["loss"] is { } loss && (step % 25 == 0 || step == 1))
                Console.WriteLine($"step {step}: loss {loss.GetValue<double>():F4}, {rec["tokens_per_s"]} tokens/s, {rec["elapsed_s"]}s");
        });
        Console.WriteLine($"pretrained {r.Steps} steps in {r.Elapsed.TotalSeconds:F0}s: train loss {r.LastLoss:F4}, held-out loss {r.LastEval?.Loss:F4} (initial {r.FirstEval?.Loss:F4})");
        return 0;
    }
}
