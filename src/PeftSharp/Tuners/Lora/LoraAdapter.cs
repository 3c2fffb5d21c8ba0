using TorchSharp.Modules;

namespace PeftSharp.Tuners.Lora;

/// <summary>One named LoRA/DoRA adapter of a model: its config and its per-module layers (keyed by module path).</summary>
internal sealed class LoraAdapter
{
    public string Name { get; }
    public LoraConfig Config { get; }
    public IReadOnlyDictionary<string, LoraLayer> Layers { get; }

    /// <summary>
    /// PiSSA rewrites the frozen base to its residual (W minus its principal part) when the adapter is created or loaded;
    /// this is the fingerprint of the base before that, the base the adapter is used with, which a saved folder records.
    /// Null for every other init (the base is left as it is).
    /// </summary>
    public IO.BaseFingerprint? BaseBeforeInit { get; init; }

    /// <summary>This adapter rewrote the base weights it adapts to their residual (<see cref="LoraConfig.IsPissa"/>).</summary>
    public bool IsPissa => Config.IsPissa;

    public LoraAdapter(string name, LoraConfig config, IReadOnlyDictionary<string, LoraLayer> layers)
    {
        Name = name;
        Config = config;
        Layers = layers;
    }

    public IEnumerable<Parameter> Parameters() => Layers.Values.SelectMany(l => l.NamedParameters().Select(p => p.Param));

    /// <summary>PEFT state-dict keys: base_model.model.&lt;module&gt;.lora_A.weight etc.</summary>
    public IEnumerable<(string Key, Parameter Param)> PeftNamedParameters() =>
        Layers.SelectMany(kv => kv.Value.NamedParameters().Select(p => ($"{PeftKeys.Prefix}{kv.Key}.{p.Key}", p.Param)));

    public long ParameterCount => Layers.Values.Sum(l => l.ParameterCount);
}

internal static class PeftKeys
{
    public const string Prefix = "base_model.model.";
}
