using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// An adapter attached to one <see cref="TunableLinear"/> (LoRA, DoRA, ...). The layer keeps its adapters in
/// a dictionary keyed by adapter name, as PEFT does, so one model holds many adapters.
/// </summary>
internal interface ILinearAdapter : IDisposable
{
    string AdapterName { get; }
    /// <summary>Given the layer input and the base output, returns the adapted output.</summary>
    Tensor Apply(Tensor x, Tensor baseOut, TunableLinear layer);
    /// <summary>Parameters with their PEFT key suffix relative to the module (e.g. "lora_A.weight").</summary>
    IEnumerable<(string Key, Parameter Param)> NamedParameters();
    /// <summary>The dense weight this adapter makes the base equivalent to: W' = f(W). Used by merge.</summary>
    Tensor MergedWeight(Tensor baseWeight);
    /// <summary>Inverse of <see cref="MergedWeight"/>: recovers W from W'.</summary>
    Tensor UnmergedWeight(Tensor mergedWeight);
}

/// <summary>Which adapters a forward uses; shared by every layer of one model.</summary>
internal sealed class AdapterState
{
    /// <summary>Adapters applied (in order) to every row, each with a weight (1 for plain use).</summary>
    public List<(string Name, double Weight)> Active { get; } = new();
    /// <summary>When true, the base model alone runs (adapters stay loaded).</summary>
    public bool Disabled { get; set; }
    /// <summary>
    /// Mixed-adapter batch: the adapter name for each row of the batch (null = base only). When set it
    /// overrides <see cref="Active"/> for the current forward.
    /// </summary>
    public string?[]? RowAdapters { get; set; }
}
