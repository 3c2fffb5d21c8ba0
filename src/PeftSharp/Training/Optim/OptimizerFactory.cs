using PeftSharp.Memory;
using TorchSharp.Modules;

namespace PeftSharp.Training.Optim;

/// <summary>Optimisers by the names the CLI and the planner share.</summary>
internal static class OptimizerFactory
{
    public static readonly string[] Names = ["adamw", "adamw-8bit", "paged-adamw", "paged-adamw-8bit"];

    /// <summary>
    /// The optimiser a name selects, read by the planner's parser (<see cref="PlanNames.Optimizer"/>, so its aliases
    /// such as "adam" and "adamw8bit" work here too); the planner's SGD variants are refused, as nothing trains with them.
    /// </summary>
    public static OptimizerKind Parse(string name)
    {
        OptimizerKind? kind = null;
        try { kind = PlanNames.Optimizer(name); }
        catch (PlanException) { }
        return kind is OptimizerKind k and (OptimizerKind.AdamW or OptimizerKind.AdamW8bit or OptimizerKind.PagedAdamW or OptimizerKind.PagedAdamW8bit)
            ? k
            : throw new ArgumentException($"--optimizer: '{name}' is not one of {string.Join(", ", Names)}");
    }

    /// <summary>The optimiser <paramref name="kind"/> over <paramref name="ps"/>, with <paramref name="o"/>'s learning rate and weight decay.</summary>
    /// <param name="kind">AdamW, 8-bit AdamW, or their paged variants.</param>
    /// <param name="ps">The trainable parameters, by name.</param>
    /// <param name="o">The run's options.</param>
    /// <param name="pagedStateDir">Where paged variants keep their memory-mapped state files.</param>
    public static IOptimizer Create(OptimizerKind kind, IReadOnlyList<(string Name, Parameter Param)> ps, TrainerOptions o, string pagedStateDir)
    {
        var opts = new AdamWOptions(o.LearningRate, WeightDecay: o.WeightDecay);
        return kind switch
        {
            OptimizerKind.AdamW => new AdamW(ps, opts),
            OptimizerKind.AdamW8bit => new AdamW8bit(ps, opts),
            OptimizerKind.PagedAdamW => new PagedAdamW(ps, pagedStateDir, opts),
            OptimizerKind.PagedAdamW8bit => new PagedAdamW8bit(ps, pagedStateDir, opts),
            _ => throw new ArgumentException($"'optimizer': {PlanNames.Name(kind)} is not one of {string.Join(", ", Names)} (the planner's SGD kinds have no trainer)"),
        };
    }
}
