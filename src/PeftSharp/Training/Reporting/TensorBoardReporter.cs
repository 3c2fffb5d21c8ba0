using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp.Modules;
using static TorchSharp.torch.utils;

namespace PeftSharp.Training.Reporting;

/// <summary>
/// TensorBoard event files in RUN/tensorboard/ (open with `tensorboard --logdir RUN/tensorboard`), written by TorchSharp's
/// own <see cref="SummaryWriter"/> (torch.utils.tensorboard): scalars as simple_value (float32) summaries, texts through
/// the text plugin (tag "NAME/text_summary", as PyTorch's add_text writes them). Tags follow HF's Trainer where it has
/// one: see <see cref="Tag"/>. SummaryWriter stamps each event with the Unix time in whole seconds.
/// </summary>
internal sealed class TensorBoardReporter : IRunReporter
{
    public const string FolderName = "tensorboard";
    readonly SummaryWriter _writer;

    TensorBoardReporter(SummaryWriter writer) => _writer = writer;

    /// <summary>A new event file in RUN/tensorboard; a fresh run first removes the event files of an earlier run there.</summary>
    public static TensorBoardReporter Open(string runDir, bool fresh)
    {
        string dir = Path.Combine(runDir, FolderName);
        if (fresh && Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        return new(tensorboard.SummaryWriter(dir));
    }

    /// <summary>
    /// The TensorBoard tag of a metrics.jsonl field, or null for fields that are not curves (step, elapsed time, counts):
    /// loss -> train/loss, lr -> train/learning_rate, eval_X -> eval/X (eval_loss -> eval/loss, eval_accuracy -> eval/accuracy,
    /// the exact-match rate), rss_mb and peak_rss_mb -> memory/..., any other number X -> train/X (tokens_per_s,
    /// grad_norm, DPO's rewards/margins, ...).
    /// </summary>
    public static string? Tag(string field) => field switch
    {
        "step" or "elapsed_s" or "eval_examples" or "tokens" => null,
        "lr" => "train/learning_rate",
        "rss_mb" or "peak_rss_mb" => "memory/" + field,
        _ when field.StartsWith("eval_", StringComparison.Ordinal) => "eval/" + field["eval_".Length..],
        _ => "train/" + field,
    };

    public void Record(JsonObject record)
    {
        int step = record["step"]!.GetValue<int>();
        foreach (var (field, value) in record)
            if (Tag(field) is { } tag && value?.GetValueKind() == JsonValueKind.Number)   // ints and doubles alike
                _writer.add_scalar(tag, (float)double.Parse(value.ToJsonString(), CultureInfo.InvariantCulture), step);
        if (record["samples"] is JsonArray samples) _writer.add_text("eval/samples", SamplesMarkdown(samples), step);
    }

    /// <summary>An eval record's exact-match samples as a markdown table (TensorBoard's text plugin renders markdown).</summary>
    public static string SamplesMarkdown(JsonArray samples)
    {
        static string Cell(JsonNode? n) => (n?.GetValue<string>() ?? "").Replace("|", "\\|").Replace("\n", " ");
        var lines = new List<string> { "| prompt | expected | model | exact |", "|---|---|---|---|" };
        foreach (var s in samples.OfType<JsonObject>())
            lines.Add($"| {Cell(s["prompt"])} | {Cell(s["expected"])} | {Cell(s["got"])} | {(s["exact"]?.GetValue<bool>() == true ? "yes" : "no")} |");
        return string.Join("\n", lines);
    }

    public void Scalar(string tag, double value, int step) => _writer.add_scalar(tag, (float)value, step);

    public void Text(string tag, string markdown, int step) => _writer.add_text(tag, markdown, step);

    /// <summary>SummaryWriter opens, appends to and closes its file for every event: nothing is left to flush.</summary>
    public void Dispose() { }
}
