using PeftSharp.Models;
using PeftSharp.Training;

namespace PeftSharp.Cli.Reports;

/// <summary>
/// What a run really used, by resident. Weights and gradients are counted exactly from the tensors; optimiser
/// state from the bytes its checkpoint holds; the runtime from the resident set before the model was loaded;
/// activations and buffers are the rest of the peak resident set (so they absorb allocator slack).
/// </summary>
public sealed record MeasuredMemory(long Weights, long Gradients, long Optimizer, long Runtime, long Peak)
{
    public long ActivationsAndBuffers => Math.Max(0, Peak - Weights - Gradients - Optimizer - Runtime);

    /// <summary>What a run on <paramref name="model"/> held (preference runs, which do not go through <see cref="FineTune"/>).</summary>
    internal static MeasuredMemory From(CausalLM model, ITrainingMethod method, long runtimeBytes, long peakBytes, string? optimizerStateFile)
    {
        var (weights, trainable) = FineTune.MemoryBytes(model, method);
        return new MeasuredMemory(weights, trainable, OptimizerBytes(optimizerStateFile), runtimeBytes, peakBytes);
    }

    static long OptimizerBytes(string? file) => file is not null && File.Exists(file) ? new FileInfo(file).Length : 0;

    /// <summary>What a finished run held: its weights (adapters included), gradients of the trainable parameters, the optimiser state file.</summary>
    public static MeasuredMemory From(FineTuneResult run, long runtimeBytes, long peakBytes, string? optimizerStateFile)
    {
        return new MeasuredMemory(run.WeightBytes, run.TrainableBytes, OptimizerBytes(optimizerStateFile), runtimeBytes, peakBytes);
    }
}
