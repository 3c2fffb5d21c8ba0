using System.Text.Json.Nodes;

using PeftSharp.Tuners;

namespace PeftSharp;

/// <summary>
/// Houlsby et al. (2019) bottleneck adapters after the attention and MLP sub-layers. Saved as
/// adapter_config.json with peft_type "PEFTSHARP_HOULSBY" (PEFT has no such type; this is our format,
/// documented in Tuners/README.md).
/// </summary>
public sealed record HoulsbyConfig : IPeftConfig
{
    public const string PeftType = "PEFTSHARP_HOULSBY";
    string IPeftConfig.PeftType => PeftType;
    /// <summary>bottleneck = hidden_size / reduction_factor.</summary>
    public int ReductionFactor { get; init; } = 16;
    public string NonLinearity { get; init; } = "relu";
    public bool AfterAttention { get; init; } = true;
    public bool AfterMlp { get; init; } = true;

    public int Bottleneck(int hidden)
    {
        if (ReductionFactor <= 0 || ReductionFactor > hidden) throw new ArgumentException($"reduction_factor must be in [1, {hidden}] (got {ReductionFactor})");
        return Math.Max(1, hidden / ReductionFactor);
    }

    public JsonObject ToJson(int hidden, string baseModel) => new()
    {
        ["peft_type"] = PeftType,
        ["task_type"] = "CAUSAL_LM",
        ["reduction_factor"] = ReductionFactor,
        ["bottleneck_size"] = Bottleneck(hidden),
        ["non_linearity"] = NonLinearity,
        ["after_attention"] = AfterAttention,
        ["after_mlp"] = AfterMlp,
        ["base_model_name_or_path"] = baseModel,
    };

    public static HoulsbyConfig FromJson(JsonObject j) => new()
    {
        ReductionFactor = j["reduction_factor"]?.GetValue<int>() ?? 16,
        NonLinearity = j["non_linearity"]?.GetValue<string>() ?? "relu",
        AfterAttention = j["after_attention"]?.GetValue<bool>() ?? true,
        AfterMlp = j["after_mlp"]?.GetValue<bool>() ?? true,
    };
}
