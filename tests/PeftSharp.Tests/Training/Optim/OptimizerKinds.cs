using PeftSharp.Training.Optim;
using TorchSharp.Modules;
using AdamW = PeftSharp.Training.Optim.AdamW;

namespace PeftSharp.Tests.Training.Optim;

/// <summary>Every optimiser variant by a short name, for theories.</summary>
internal static class OptimizerKinds
{
    public static readonly TheoryData<string> All = new() { "adamw", "adamw8bit", "paged", "paged8bit", "paged-staged" };

    public static IOptimizer Create(string kind, IReadOnlyList<(string Name, Parameter Param)> ps, string stateDir, AdamWOptions? o = null)
    {
        o ??= new AdamWOptions(LearningRate: 1e-2, WeightDecay: 0.01);
        return kind switch
        {
            "adamw" => new AdamW(ps, o),
            "adamw8bit" => new AdamW8bit(ps, o),
            "paged" => new PagedAdamW(ps, stateDir, o),
            "paged8bit" => new PagedAdamW8bit(ps, stateDir, o),
            "paged-staged" => new PagedAdamW(ps, stateDir, o, stage: true),
            _ => throw new ArgumentException(kind),
        };
    }
}
