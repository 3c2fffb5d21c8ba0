using TorchSharp.Modules;

namespace PeftSharp.Tuners.Lora;

/// <summary>One named LoRA/DoRA adapter of a model: its config and its per-module layers (keyed by module path).</summary>
internal sealed class LoraAdapter
{
    public string Name { get; }
    public LoraConfig Config { get; }
    public IReadOnlyDictionary<string, LoraLayer> Layers { get; }

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
