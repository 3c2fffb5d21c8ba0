using System.Globalization;
using System.Text;
using PeftSharp.Memory;
using Spectre.Console;

namespace PeftSharp.Cli.Reports;

/// <summary>
/// What the reports of SFT runs (<see cref="RunSummary"/>) and DPO/ORPO runs (<see cref="PreferenceSummary"/>) share:
/// the number formats, the before/after results table and the planned-vs-measured memory rows, so both read alike.
/// </summary>
static class ReportTables
{
    public static string Mb(long bytes) => (bytes / 1e6).ToString("F1", CultureInfo.InvariantCulture);
    /// <summary>A share as a percentage; "n/a" when not measured (or not finite).</summary>
    public static string Pct(double? x) => Finite(x) is double v ? v.ToString("P1", CultureInfo.InvariantCulture) : "n/a";
    public static string F4(double? x) => Finite(x) is double v ? v.ToString("F4", CultureInfo.InvariantCulture) : "n/a";
    public static string Ppl(double? loss) => loss is double l ? Math.Exp(l).ToString("F3", CultureInfo.InvariantCulture) : "n/a";
    /// <summary>For summary.json: NaN and infinities are not JSON numbers, so they are written as null.</summary>
    public static double? Finite(double? x) => x is double v && double.IsFinite(v) ? v : null;

    /// <summary>(planned - measured) / measured peak resident set.</summary>
    public static double PlanError(MemoryPlan plan, MeasuredMemory measured) => (plan.TotalBytes - (double)measured.Peak) / measured.Peak;

    public static (string Name, long Planned, long Measured)[] MemoryRows(MemoryPlan plan, MeasuredMemory measured) =>
    [
        ("weights", plan.WeightsBytes, measured.Weights),
        ("gradients", plan.GradientsBytes, measured.Gradients),
        ("optimizer state", plan.OptimizerBytes, measured.Optimizer),
        // Measured runtime = the resident set before loading; what the run adds to it is in the rest of the peak.
        ("activations + buffers + runtime growth", plan.ActivationsBytes + plan.LogitsBytes + plan.DequantBufferBytes + plan.AllocatorSlackBytes + plan.RuntimeGrowthBytes, measured.ActivationsAndBuffers),
        ("runtime after load", plan.RuntimeAfterLoadBytes, measured.Runtime),
        ("total (peak RSS)", plan.TotalBytes, measured.Peak),
    ];

    /// <summary>The console line after a run: planned and measured peak and the plan's error.</summary>
    public static void WritePeakLine(MemoryPlan plan, MeasuredMemory measured) =>
        AnsiConsole.MarkupLineInterpolated($"peak memory: planned {Mb(plan.TotalBytes)} MB, measured {Mb(measured.Peak)} MB ({PlanError(plan, measured):+0.0%;-0.0%})");

    /// <summary>report.md: the metric | before | after table.</summary>
    public static void AppendResults(StringBuilder sb, IEnumerable<(string Name, string Before, string After)> rows)
    {
        sb.AppendLine("| metric | before | after |").AppendLine("|---|---|---|");
        foreach (var (n, b, a) in rows) sb.AppendLine($"| {n} | {b} | {a} |");
    }

    /// <summary>report.md: the "Memory: planned vs measured" section, <paramref name="howMeasured"/> its opening paragraph.</summary>
    public static void AppendMemory(StringBuilder sb, MemoryPlan plan, MeasuredMemory measured, string howMeasured)
    {
        sb.AppendLine("## Memory: planned vs measured").AppendLine();
        sb.AppendLine(howMeasured).AppendLine();
        sb.AppendLine("| resident | planned MB | measured MB |").AppendLine("|---|---|---|");
        foreach (var (n, p, m) in MemoryRows(plan, measured)) sb.AppendLine($"| {n} | {Mb(p)} | {Mb(m)} |");
        sb.AppendLine().AppendLine($"Peak error of the plan: {PlanError(plan, measured).ToString("+0.0%;-0.0%", CultureInfo.InvariantCulture)}.").AppendLine();
        sb.AppendLine("![memory](memory.png)");
    }
}
