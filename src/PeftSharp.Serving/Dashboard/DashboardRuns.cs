using System.Text.Json.Nodes;

namespace PeftSharp.Serving.Dashboard;

/// <summary>
/// The runs a dashboard shows: a run folder (it holds metrics.jsonl, or will once `peft train --dashboard` takes its first
/// step) is one run; any other folder (e.g. `peft compare`'s --out) shows each subfolder holding a metrics.jsonl, found
/// again on every request so that runs appear as compare starts them.
/// </summary>
internal sealed class DashboardRuns
{
    public const string MetricsFile = "metrics.jsonl";
    /// <summary>What `peft train` knows before its first step and metrics.jsonl does not say (see <see cref="RunPlanFile"/>).</summary>
    public const string RunPlanFile = "run-plan.json";
    /// <summary>What `peft train` writes at the end (the measured peak beside the planned one).</summary>
    public const string SummaryFile = "summary.json";

    public string Folder { get; }
    readonly bool _single;

    DashboardRuns(string folder, bool single) { Folder = folder; _single = single; }

    /// <summary>
    /// The runs of <paramref name="folder"/>. A folder holding no metrics.jsonl, in itself or in a subfolder, is refused
    /// unless <paramref name="live"/> (the folder of the run this process is about to train).
    /// </summary>
    public static DashboardRuns Open(string folder, bool live)
    {
        folder = Path.GetFullPath(folder);
        if (live) return new(folder, single: true);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: folder not found");
        if (File.Exists(Path.Combine(folder, MetricsFile))) return new(folder, single: true);
        var runs = new DashboardRuns(folder, single: false);
        if (runs.Names().Count == 0)
            throw new InvalidDataException($"{folder}: no {MetricsFile} here or in its subfolders (not a `peft train` run folder nor a `peft compare` folder)");
        return runs;
    }

    /// <summary>Run names: the folder's own name for a run folder, subfolder names (sorted) for a compare folder.</summary>
    public IReadOnlyList<string> Names() => _single ? [Path.GetFileName(Folder)]
        : Directory.GetDirectories(Folder).Where(d => File.Exists(Path.Combine(d, MetricsFile))).Select(d => Path.GetFileName(d)!).Order(StringComparer.Ordinal).ToList();

    /// <summary>The folder of run <paramref name="name"/>, or null when it is not one of <see cref="Names"/>.</summary>
    public string? Dir(string name) => !Names().Contains(name) ? null : _single ? Folder : Path.Combine(Folder, name);

    /// <summary>Checks every complete line of every run's metrics.jsonl, so that a corrupt file is named before serving.</summary>
    public void Validate()
    {
        foreach (var name in Names())
        {
            var path = Path.Combine(Dir(name)!, MetricsFile);
            if (!File.Exists(path)) continue;
            var chunk = MetricsTail.Read(path, 0, 0);
            while (chunk.More) chunk = MetricsTail.Read(path, chunk.Offset, chunk.Line);
        }
    }

    /// <summary>
    /// RUN/run-plan.json and RUN/summary.json as one object (null members when absent or unreadable), with the run's
    /// <c>state</c>: "finished" (summary.json), else what <see cref="TrainerProcess.State"/> says of the process that
    /// wrote run-plan.json: "running", "stopped" (gone without writing summary.json: killed, crashed or interrupted) or
    /// "elsewhere" (it trains on another machine, named by the plan's <c>host</c>; its state cannot be seen from here).
    /// </summary>
    public static JsonObject Info(string runDir)
    {
        var plan = ReadOrNull(Path.Combine(runDir, RunPlanFile));
        bool finished = File.Exists(Path.Combine(runDir, SummaryFile));
        return new()
        {
            ["plan"] = plan,
            ["summary"] = ReadOrNull(Path.Combine(runDir, SummaryFile)),
            ["finished"] = finished,
            ["state"] = finished ? "finished" : TrainerProcess.State(plan),
        };
    }

    static JsonNode? ReadOrNull(string path)
    {
        try { return File.Exists(path) ? JsonNode.Parse(File.ReadAllText(path)) : null; }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException) { return null; }   // being replaced: the next poll reads it
    }

    /// <summary>
    /// Writes RUN/run-plan.json: the run's method, total steps and planned peak, which the dashboard needs for the ETA and
    /// the planned-memory line before the run has finished (metrics.jsonl holds neither). A summary.json already there
    /// belongs to an earlier run of the folder (--overwrite): it is removed, so the page does not call this run finished.
    /// </summary>
    public static void WriteRunPlan(string runDir, string method, int totalSteps, long plannedBytes)
    {
        Directory.CreateDirectory(runDir);
        File.Delete(Path.Combine(runDir, SummaryFile));
        // Which process trains (pid, host, boot, start time), so the page can say "stopped" when it is gone without a summary.json.
        PeftSharp.IO.AtomicFile.WriteAllText(Path.Combine(runDir, RunPlanFile), new JsonObject(TrainerProcess.Current())
        {
            ["method"] = method, ["total_steps"] = totalSteps, ["planned_bytes"] = plannedBytes,
        }.ToJsonString());
    }
}
