using System.ComponentModel;
using PeftSharp.IO;
using PeftSharp.Models;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>peft inspect: what a model folder holds, read from the headers alone (no weights are loaded).</summary>
public sealed class InspectCommand : Command<InspectCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--model <DIR>")]
        [Description("Hugging Face model folder or Hub repo id ORG/NAME or ORG/NAME@REV")]
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
        using var reader = new CheckpointReader(s.Model);
        var infos = reader.Names.Select(reader.Info).OrderBy(i => i.Name, StringComparer.Ordinal).ToList();
        long elements = infos.Where(i => !IsQuantState(i.Name)).Sum(i => i.ElementCount);

        var summary = new Table().AddColumns("property", "value").HideHeaders();
        summary.AddRow("architecture", $"{string.Join(", ", c.Raw["architectures"]?.AsArray().Select(a => a!.ToString()) ?? [])} ({c.ModelType})");
        summary.AddRow("layers", c.NumLayers.ToString());
        summary.AddRow("hidden / intermediate", $"{c.HiddenSize} / {c.IntermediateSize}");
        summary.AddRow("heads / kv heads / head dim", $"{c.NumHeads} / {c.NumKvHeads} / {c.HeadDim}");
        summary.AddRow("vocab", c.VocabSize.ToString());
        summary.AddRow("tied embeddings", c.TieWordEmbeddings.ToString().ToLowerInvariant());
        summary.AddRow("rope", c.RopeScaling is { } rs ? $"theta {c.RopeTheta}, {rs.Type} x{rs.Factor}" : $"theta {c.RopeTheta}");
        summary.AddRow("parameters", PeftSharp.Memory.ModelShape.Load(Path.Combine(s.Model, "config.json")).TotalParameters.ToString("N0"));
        summary.AddRow("stored tensors", infos.Count.ToString());
        summary.AddRow("stored elements", elements.ToString("N0"));
        summary.AddRow("dtypes", string.Join(", ", infos.GroupBy(i => i.Dtype).Select(g => $"{g.Key} x{g.Count()}")));
        summary.AddRow("bytes on disk", $"{reader.BytesOnDisk:N0} ({reader.Files.Count} file(s))");
        foreach (var line in InspectExtensions.Describe(s.Model)) summary.AddRow(line.Key, line.Value);
        AnsiConsole.Write(summary);

        var table = new Table().AddColumns("tensor", "dtype", "shape");
        foreach (var i in infos) table.AddRow(Markup.Escape(i.Name), i.Dtype, $"[[{string.Join(", ", i.Shape)}]]");
        AnsiConsole.Write(table);
        return 0;
    }

    static bool IsQuantState(string name) => name.Contains(".weight.") && !name.EndsWith(".weight", StringComparison.Ordinal);
}

/// <summary>Extra lines for inspect contributed by other parts (quantisation).</summary>
public static class InspectExtensions
{
    public static List<Func<string, IEnumerable<KeyValuePair<string, string>>>> Providers { get; } = new();
    public static IEnumerable<KeyValuePair<string, string>> Describe(string dir) => Providers.SelectMany(p => p(dir));
}
