using System.ComponentModel;
using PeftSharp.IO;
using PeftSharp.Models;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>peft inspect: what a model folder (or a GGUF file) holds, read from the headers alone (no weights are loaded).</summary>
public sealed class InspectCommand : Command<InspectCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--model <DIR>")]
        [Description("Hugging Face model folder, .gguf file, or Hub repo id ORG/NAME or ORG/NAME@REV")]
        public string Model { get; set; } = "";

        public override ValidationResult Validate()
        {
            if (string.IsNullOrEmpty(Model)) return ValidationResult.Error("--model is required");
            var resolved = HubCli.TryResolve(Model, "--model", out var folder);
            Model = folder;
            return resolved;
        }
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        var c = ModelConfig.Load(s.Model);
        var shape = PeftSharp.Memory.ModelShape.Load(Path.Combine(s.Model, "config.json"));
        var summary = new Table().AddColumns("property", "value").HideHeaders();
        summary.AddRow("architecture", $"{string.Join(", ", c.Raw["architectures"]?.AsArray().Select(a => a!.ToString()) ?? [])} ({c.ModelType})");
        summary.AddRow("layers", c.NumLayers.ToString());
        summary.AddRow("hidden / intermediate", $"{c.HiddenSize} / {c.IntermediateSize}");
        summary.AddRow("heads / kv heads / head dim", $"{c.NumHeads} / {c.NumKvHeads} / {c.HeadDim}");
        summary.AddRow("vocab", c.VocabSize.ToString());
        summary.AddRow("tied embeddings", c.TieWordEmbeddings.ToString().ToLowerInvariant());
        summary.AddRow("rope", c.RopeScaling is { } rs ? $"theta {c.RopeTheta}, {rs.Type} x{rs.Factor:0.###}" : $"theta {c.RopeTheta}");
        if (c.SlidingWindow is { } w) summary.AddRow("sliding window", $"{w} on {c.SlidingLayers.Count(x => x)} of {c.NumLayers} layers");
        summary.AddRow("parameters", shape.TotalParameters.ToString("N0"));
        if (PeftSharp.IO.Gguf.GgufModelSource.FileOf(s.Model) is { } gguf) return InspectGguf(gguf, summary);
        bool hasWeights = File.Exists(Path.Combine(s.Model, "model.safetensors")) || File.Exists(Path.Combine(s.Model, "model.safetensors.index.json"));
        if (!hasWeights)
        {
            AnsiConsole.Write(summary);
            Console.Error.WriteLine($"{s.Model}: no model.safetensors or model.safetensors.index.json: all {CheckpointAudit.ExpectedTensors(shape).Count} tensors the config implies are missing");
            return 1;
        }

        using var reader = new CheckpointReader(s.Model);
        var infos = reader.Names.Select(reader.Info).OrderBy(i => i.Name, StringComparer.Ordinal).ToList();
        long elements = infos.Where(i => !IsQuantState(i.Name)).Sum(i => i.ElementCount);
        summary.AddRow("stored tensors", infos.Count.ToString());
        summary.AddRow("stored elements", elements.ToString("N0"));
        summary.AddRow("dtypes", string.Join(", ", infos.GroupBy(i => i.Dtype).Select(g => $"{g.Key} x{g.Count()}")));
        summary.AddRow("bytes on disk", $"{reader.BytesOnDisk:N0} ({reader.Files.Count} file(s))");
        foreach (var line in InspectExtensions.Describe(s.Model)) summary.AddRow(line.Key, line.Value);
        AnsiConsole.Write(summary);

        var table = new Table().AddColumns("tensor", "dtype", "shape");
        foreach (var i in infos) table.AddRow(Markup.Escape(i.Name), i.Dtype, $"[[{string.Join(", ", i.Shape)}]]");
        AnsiConsole.Write(table);

        // The folder against its config: what loading would refuse, all of it at once.
        var audit = CheckpointAudit.Check(reader, shape);
        void Report(string what, IReadOnlyList<string> names)
        {
            if (names.Count == 0) return;
            Console.Error.WriteLine($"{s.Model}: {names.Count} {what}:");
            foreach (var n in names) Console.Error.WriteLine($"  {n}");
        }
        Report("tensor(s) the config implies are missing", audit.Missing);
        Report($"tensor(s) a {c.ModelType} model with this config does not use", audit.Unexpected);
        Report("tensor(s) have another shape than the config implies", audit.Misshaped);
        return audit.Complete ? 0 : 1;
    }

    /// <summary>
    /// --model FILE.gguf: the summary from its metadata (above) and its tensors under their GGUF names and ggml types;
    /// loading checks names and shapes against the config (the folder made from the file holds no weights of its own).
    /// </summary>
    static int InspectGguf(string file, Table summary)
    {
        using var r = new PeftSharp.IO.Gguf.GgufReader(file);
        summary.AddRow("file", Markup.Escape($"{file} (GGUF v{r.Version})"));
        summary.AddRow("stored tensors", r.Tensors.Count.ToString());
        summary.AddRow("stored elements", r.Tensors.Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b)).ToString("N0"));
        summary.AddRow("ggml types", string.Join(", ", r.Tensors.GroupBy(t => TypeName(t)).Select(g => $"{g.Key} x{g.Count()}")));
        summary.AddRow("bytes on disk", $"{new FileInfo(file).Length:N0} (1 file(s))");
        AnsiConsole.Write(summary);
        var table = new Table().AddColumns("tensor", "ggml type", "shape");
        foreach (var t in r.Tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
            table.AddRow(Markup.Escape(t.Name), TypeName(t), $"[[{string.Join(", ", t.Shape)}]]");
        AnsiConsole.Write(table);
        return 0;
    }

    static string TypeName(PeftSharp.IO.Gguf.GgufTensorInfo t) => PeftSharp.IO.Gguf.GgufDequant.TypeName((uint)t.Type);

    static bool IsQuantState(string name) => name.Contains(".weight.") && !name.EndsWith(".weight", StringComparison.Ordinal);
}

/// <summary>Lines inspect adds about a folder's storage, each asked of the part that knows it (no registry: the list is here).</summary>
public static class InspectExtensions
{
    /// <summary>The quantisation of the folder's weights (scheme, tensors, bits per weight; "none" for a dense checkpoint).</summary>
    public static IEnumerable<KeyValuePair<string, string>> Describe(string dir) =>
        [new("quantisation", Quantization.QuantizationInfo.Describe(dir).ToString())];
}
