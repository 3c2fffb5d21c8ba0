using System.Text.Json.Nodes;

namespace PeftSharp.Training.Reporting;

/// <summary>
/// The reporters named by `--report-to` (a comma list: "none", or "tensorboard"; more can join the list later, as in HF's
/// TrainingArguments.report_to), fanned out as one <see cref="IRunReporter"/>.
/// </summary>
internal sealed class RunReporters : IRunReporter
{
    public static readonly IReadOnlyList<string> Names = ["none", "tensorboard"];
    readonly IReadOnlyList<IRunReporter> _all;

    RunReporters(IReadOnlyList<IRunReporter> all) => _all = all;

    /// <summary>No reporter: what `--report-to none` (the default) opens.</summary>
    public static RunReporters None { get; } = new([]);

    /// <summary>The names in a `--report-to` list, checked; "none" alone means no reporter.</summary>
    public static IReadOnlyList<string> Parse(string reportTo)
    {
        var names = reportTo.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(n => n.ToLowerInvariant()).Distinct().ToList();
        if (names.Count == 0) throw new ArgumentException("--report-to: empty; use none or tensorboard");
        if (names.FirstOrDefault(n => !Names.Contains(n)) is { } bad) throw new ArgumentException($"--report-to: '{bad}' is not {string.Join(" or ", Names)}");
        if (names.Contains("none") && names.Count > 1) throw new ArgumentException("--report-to: none excludes the other reporters");
        return names.Where(n => n != "none").ToList();
    }

    /// <summary>
    /// Opens the reporters of <paramref name="reportTo"/> for the run in <paramref name="runDir"/>. A fresh run
    /// (<paramref name="fresh"/>) first removes what an earlier run in that folder reported; a resumed one appends.
    /// </summary>
    public static RunReporters Open(string reportTo, string runDir, bool fresh)
    {
        var names = Parse(reportTo);
        return names.Count == 0 ? None : new(names.Select(n => n switch
        {
            "tensorboard" => (IRunReporter)TensorBoardReporter.Open(runDir, fresh),
            _ => throw new ArgumentException($"--report-to: '{n}' has no reporter"),
        }).ToList());
    }

    public void Record(JsonObject record) { foreach (var r in _all) r.Record(record); }
    public void Scalar(string tag, double value, int step) { foreach (var r in _all) r.Scalar(tag, value, step); }
    public void Text(string tag, string markdown, int step) { foreach (var r in _all) r.Text(tag, markdown, step); }
    public void Dispose() { foreach (var r in _all) r.Dispose(); }
}
