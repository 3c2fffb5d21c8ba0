using System.ComponentModel;
using System.Diagnostics;
using PeftSharp.Quantization;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>peft quantize: a Hugging Face folder -> a bitsandbytes 4-bit folder, one tensor at a time.</summary>
public sealed class QuantizeCommand : Command<QuantizeCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--model <DIR>")]
        [Description("Hugging Face model folder (dense weights) or Hub repo id ORG/NAME or ORG/NAME@REV")]
        public string Model { get; set; } = "";

        [CommandOption("--out <DIR>")]
        [Description("Output folder (written atomically; replaced if it exists)")]
        public string Out { get; set; } = "";

        [CommandOption("--block-size <N>")]
        [Description("Quantisation block size, a power of two in 32..4096")]
        [DefaultValue(64)]
        public int BlockSize { get; set; } = 64;

        [CommandOption("--no-double-quant")]
        [Description("Keep the per-block absmax in float32 (4.5 bits/weight at block 64)")]
        public bool NoDoubleQuant { get; set; }

        [CommandOption("--fp4")]
        [Description("FP4 instead of NF4")]
        public bool Fp4 { get; set; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Model)) return ValidationResult.Error("--model is required");
            if (string.IsNullOrWhiteSpace(Out)) return ValidationResult.Error("--out is required");
            if (CliOptions.ModelOutFolder(Out) is { Successful: false } outInUse) return outInUse;
            try { Options.Validate(); }
            catch (ArgumentException e) { return ValidationResult.Error($"--block-size: {e.Message}"); }
            var resolved = HubCli.TryResolve(Model, "--model", out var folder);
            Model = folder;
            return resolved;
        }

        public Nf4Options Options => new(BlockSize, !NoDoubleQuant, Fp4 ? FourBitType.Fp4 : FourBitType.Nf4);
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        using var cleanup = InterruptCleanup.Register();   // Ctrl-C leaves no hidden temp file
        var sw = Stopwatch.StartNew();
        var r = ModelQuantizer.QuantizeFolder(s.Model, s.Out, s.Options);
        var t = new Table().AddColumns("property", "value").HideHeaders();
        t.AddRow("scheme", r.Info.Scheme);
        t.AddRow("quantised tensors", $"{r.Info.QuantizedTensors} ({r.Info.QuantizedWeights:N0} weights)");
        t.AddRow("bits per weight", $"{r.Info.BitsPerWeight:F4} (codes + scales); {r.Info.BitsPerWeightWithTables:F4} with per-layer code tables");
        t.AddRow("relative error", $"{r.RelativeError:F4} (Frobenius, all quantised weights)");
        t.AddRow("output", $"{Markup.Escape(s.Out)} ({r.OutputBytes:N0} bytes)");
        t.AddRow("time", $"{sw.Elapsed.TotalSeconds:F1} s");
        AnsiConsole.Write(t);
        return 0;
    }
}
