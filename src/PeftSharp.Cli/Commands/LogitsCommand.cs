using System.ComponentModel;
using TorchSharp;
using PeftSharp.IO;
using Spectre.Console;
using Spectre.Console.Cli;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft logits: input_ids (int64 [B,T]) in, logits (float32 [B,T,V]) out, both safetensors. The way to check
/// numerical parity with another framework.
/// </summary>
public sealed class LogitsCommand : Command<LogitsCommand.Settings>
{
    public sealed class Settings : ModelSettings
    {
        [CommandOption("--input <FILE>")]
        [Description("safetensors file with tensor input_ids (int64 [[B,T]])")]
        public string Input { get; set; } = "";

        [CommandOption("--output <FILE>")]
        [Description("safetensors file to write tensor logits (float32 [[B,T,V]]) to")]
        public string Output { get; set; } = "";

        [CommandOption("--adapter <DIR>")]
        [Description("Adapter folder to apply (repeatable; DIR, DIR:WEIGHT or NAME=DIR[[:WEIGHT]]; the brackets mean optional)")]
        public string[] Adapters { get; set; } = [];

        [CommandOption("--allow-base-mismatch")]
        public bool AllowBaseMismatch { get; set; }

        public override ValidationResult Validate()
        {
            var r = base.Validate();
            if (!r.Successful) return r;
            if (string.IsNullOrEmpty(Input)) return ValidationResult.Error("--input is required");
            if (!File.Exists(Input)) return ValidationResult.Error($"--input: file '{Input}' not found");
            if (string.IsNullOrEmpty(Output)) return ValidationResult.Error("--output is required");
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        using var input = new SafeTensorsFile(s.Input);
        if (!input.Contains("input_ids")) throw new InvalidDataException($"{s.Input}: no tensor named 'input_ids'");
        var info = input.Info("input_ids");
        if (info.Shape.Length != 2) throw new InvalidDataException($"{s.Input}: input_ids must be 2-D [B,T], got [{string.Join(", ", info.Shape)}]");
        if (info.Dtype is not ("I64" or "I32")) throw new InvalidDataException($"{s.Input}: input_ids must be int64, got {info.Dtype}");
        using var model = s.LoadModel();
        AdapterCli.Apply(model, s.Adapters, s.AllowBaseMismatch);
        using var ids = input.Load("input_ids", ScalarType.Int64, model.Device);
        long vocab = model.Config.VocabSize;
        // Scalars held until the comparisons have returned (a TorchSharp implicit Scalar can be finalized mid-call: ScalarArgs).
        using var zero = 0L.ToScalar();
        using var vocabEnd = vocab.ToScalar();
        using (var checks = NewDisposeScope())   // the comparisons' tensors freed here, not by finalizers
            if (ids.lt(zero).logical_or(ids.ge(vocabEnd)).any().item<bool>()) throw new InvalidDataException($"{s.Input}: input_ids has ids outside [0, {vocab})");
        using var _ = no_grad();
        using var logits = model.Forward(ids);
        using var f32 = logits.to(ScalarType.Float32, CPU);
        SafeTensorsWriter.Write(s.Output, [("logits", f32)], new Dictionary<string, string> { ["format"] = "pt" });
        AnsiConsole.MarkupLine($"wrote logits [[{string.Join(", ", f32.shape)}]] to {Markup.Escape(s.Output)}");
        return 0;
    }
}
