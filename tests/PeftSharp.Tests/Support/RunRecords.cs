using System.Text.Json.Nodes;
using PeftSharp.Training;

namespace PeftSharp.Tests;

/// <summary>What a training run wrote to its folder, read back for assertions.</summary>
public static class RunRecords
{
    /// <summary>The training loss of every step, in order, from metrics.jsonl.</summary>
    public static double[] Losses(string outDir) => File.ReadLines(Path.Combine(outDir, MetricsLog.FileName))
        .Select(l => JsonNode.Parse(l)!).Where(n => n["loss"] is not null).Select(n => n["loss"]!.GetValue<double>()).ToArray();
}
