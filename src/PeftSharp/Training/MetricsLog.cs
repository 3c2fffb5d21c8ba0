using System.Globalization;
using System.Text.Json.Nodes;

namespace PeftSharp.Training;

/// <summary>
/// metrics.jsonl: one JSON object per line. Training steps: {"step","loss","lr","grad_norm","tokens","tokens_per_s",
/// "elapsed_s","rss_mb","peak_rss_mb"}; evaluations: {"step","eval_loss","eval_accuracy","eval_examples","elapsed_s"}.
/// Memory is the process's resident set from /proc/self/status (see <see cref="ProcessMemory"/>).
/// </summary>
internal sealed class MetricsLog
{
    public const string FileName = "metrics.jsonl";
    readonly string _path;

    public MetricsLog(string outDir) => _path = Path.Combine(outDir, FileName);

    public void Append(JsonObject record) => File.AppendAllText(_path, record.ToJsonString() + "\n");

    /// <summary>On resume: drops records written after the checkpoint's step by the interrupted run.</summary>
    public void TruncateAfter(int step)
    {
        if (!File.Exists(_path)) return;
        var kept = File.ReadLines(_path).Where(l => TryParse(l)?["step"]?.GetValue<int>() <= step).ToList();
        IO.AtomicFile.WriteAllText(_path, string.Concat(kept.Select(l => l + "\n")));
    }

    /// <summary>The evaluation recorded at <paramref name="step"/> (on resume: the run's "before" figures), or null.</summary>
    public EvalResult? EvalAt(int step) => EvalRecordAt(step) is { } n
        ? new EvalResult(n["eval_loss"]!.GetValue<double>(), n["eval_accuracy"]?.GetValue<double>(), n["eval_examples"]?.GetValue<int>() ?? 0)
        : null;

    /// <summary>The evaluation record written at <paramref name="step"/> (any trainer's fields), or null.</summary>
    internal JsonNode? EvalRecordAt(int step) => !File.Exists(_path) ? null
        : File.ReadLines(_path).Select(TryParse).FirstOrDefault(r => r?["eval_loss"] is not null && r["step"]?.GetValue<int>() == step);

    /// <summary>A line as JSON, or null for a line an interrupted write left half-written.</summary>
    static JsonNode? TryParse(string line)
    {
        try { return JsonNode.Parse(line); }
        catch (System.Text.Json.JsonException) { return null; }
    }

    public static double Round(double x, int digits = 6) =>
        double.IsFinite(x) ? double.Parse(x.ToString("G" + digits, CultureInfo.InvariantCulture), CultureInfo.InvariantCulture) : x;
}
