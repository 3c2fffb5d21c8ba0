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

    public static MeasuredMemory From(CausalLM model, ITrainingMethod method, long runtimeBytes, long peakBytes, string? optimizerStateFile)
    {
        long weights = model.parameters().Sum(p => p.numel() * p.element_size())
                       + model.Linears().Where(l => l.Quantized is not null).Sum(l => l.Quantized!.StorageBytes);
        var trainable = method.TrainableParameters.Select(p => p.P).ToList();
        // Adapter parameters are not registered with the model: count them as weights too.
        var registered = model.parameters().Select(p => p.Handle).ToHashSet();
        weights += trainable.Where(p => !registered.Contains(p.Handle)).Sum(p => p.numel() * p.element_size());
        long grads = trainable.Sum(p => p.numel() * p.element_size());
        long optimizer = optimizerStateFile is not null && File.Exists(optimizerStateFile) ? new FileInfo(optimizerStateFile).Length : 0;
        return new MeasuredMemory(weights, grads, optimizer, runtimeBytes, peakBytes);
    }
}
