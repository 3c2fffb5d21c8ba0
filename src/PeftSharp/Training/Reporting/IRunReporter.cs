using System.Text.Json.Nodes;

namespace PeftSharp.Training.Reporting;

/// <summary>
/// Where a training run's figures go besides metrics.jsonl (`peft train --report-to`): every metrics.jsonl record as it
/// is written, plus the figures and texts that live outside it (the memory plan, the measured peak, the options, the
/// report). Implementations write as they are told; the caller owns the order and disposes at the end of the run.
/// </summary>
internal interface IRunReporter : IDisposable
{
    /// <summary>One metrics.jsonl record (a training step or an evaluation), as <see cref="RunFolder.Record"/> wrote it.</summary>
    void Record(JsonObject record);
    /// <summary>A figure outside metrics.jsonl, e.g. "memory/planned_peak_mb" at step 0.</summary>
    void Scalar(string tag, double value, int step);
    /// <summary>A text (markdown), e.g. the run's options at step 0 or its report at the last step.</summary>
    void Text(string tag, string markdown, int step);
}
