using TorchSharp.Modules;

namespace PeftSharp.Training.Optim;

/// <summary>Optimisers by the names the CLI and the planner share.</summary>
public static class OptimizerFactory
{
    public static readonly string[] Names = ["adamw", "adamw-8bit", "paged-adamw", "paged-adamw-8bit"];

    /// <param name="pagedStateDir">Where paged variants keep their memory-mapped state files.</param>
    public static IOptimizer Create(string name, IReadOnlyList<(string Name, Parameter Param)> ps, TrainerOptions o, string pagedStateDir)
    {
        var opts = new AdamWOptions(o.LearningRate, WeightDecay: o.WeightDecay);
        return name.Trim().ToLowerInvariant() switch
        {
            "adamw" or "adam" => new AdamW(ps, opts),
            "adamw-8bit" or "adamw8bit" => new AdamW8bit(ps, opts),
            "paged-adamw" => new PagedAdamW(ps, pagedStateDir, opts),
            "paged-adamw-8bit" => new PagedAdamW8bit(ps, pagedStateDir, opts),
            _ => throw new ArgumentException($"--optimizer: '{name}' is not one of {string.Join(", ", Names)}"),
        };
    }
}
