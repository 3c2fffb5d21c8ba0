using TorchSharp.Modules;

namespace PeftSharp.Training.Optim;

/// <summary>AdamW whose fp32 state lives in memory-mapped files under <paramref name="stateDirectory"/> (see <see cref="PagedStateStore"/>).</summary>
internal sealed class PagedAdamW(IReadOnlyList<(string Name, Parameter Param)> parameters, string stateDirectory, AdamWOptions? options = null, bool stage = false)
    : AdamW(parameters, options, new PagedStateStore(stateDirectory, stage))
{
}

/// <summary>8-bit AdamW whose state lives in memory-mapped files under <paramref name="stateDirectory"/>.</summary>
internal sealed class PagedAdamW8bit(IReadOnlyList<(string Name, Parameter Param)> parameters, string stateDirectory, AdamWOptions? options = null, bool stage = false)
    : AdamW8bit(parameters, options, new PagedStateStore(stateDirectory, stage))
{
}
