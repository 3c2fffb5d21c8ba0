using System.Globalization;
using System.Text.Json.Nodes;

namespace PeftSharp.Training;

/// <summary>
/// metrics.jsonl: one JSON object per line. Training steps: {"step","loss","lr","grad_norm","tokens_per_s",
/// "elapsed_s","rss_mb","peak_rss_mb"}; evaluations: {"step","eval_loss","eval_accuracy","eval_examples","elapsed_s"}.
/// Memory is the process's resident set from /proc/self/status (see <see cref="ProcessMemory"/>).
/// </summary>
public sealed class MetricsLog
{
    public const string FileName = "metrics.jsonl";
    readonly string _path;

    public MetricsLog(string outDir) => _path = Path.Combine(outDir, FileName);

    public void Append(JsonObject record) => File.AppendAllText(_path, record.ToJsonString() + "\n");

    /// <summary>On resume: drops records written after the checkpoint's step by the interrupted run.</summary>
    public void TruncateAfter(int step)
    {
        if (!File.Exists(_path)) return;
        var kept = File.ReadLines(_path).Where(l =>
        {
            try { return JsonNode.Parse(l)?["step"]?.GetValue<int>() <= step; }
            catch (System.Text.Json.JsonException) { return false; }
        }).ToList();
        IO.AtomicFile.WriteAllText(_path, string.Concat(kept.Select(l => l + "\n")));
    }

    /// <summary>The evaluation recorded at <paramref name="step"/> (on resume: the run's "before" figures), or null.</summary>
    public EvalResult? EvalAt(int step)
    {
        if (!File.Exists(_path)) return null;
        foreach (var line in File.ReadLines(_path))
        {
            JsonNode? n;
            try { n = JsonNode.Parse(line); }
            catch (System.Text.Json.JsonException) { continue; }
            if (n?["eval_loss"] is null || n["step"]?.GetValue<int>() != step) continue;
            return new EvalResult(n["eval_loss"]!.GetValue<double>(), n["eval_accuracy"]?.GetValue<double>(), n["eval_examples"]?.GetValue<int>() ?? 0);
        }
        return null;
    }

    public static double Round(double x, int digits = 6) =>
        double.IsFinite(x) ? double.Parse(x.ToString("G" + digits, CultureInfo.InvariantCulture), CultureInfo.InvariantCulture) : x;
}
