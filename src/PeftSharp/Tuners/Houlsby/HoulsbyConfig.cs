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
    /// <summary>adapter_config.json's peft_type for Houlsby adapters (a PeftSharp format; PEFT has none).</summary>
    public const string PeftType = "PEFTSHARP_HOULSBY";
    string IPeftConfig.PeftType => PeftType;
    /// <summary>bottleneck = hidden_size / reduction_factor.</summary>
    public int ReductionFactor { get; init; } = 16;
    /// <summary>The activation between the down and up projections (relu, gelu, silu, ...); default relu.</summary>
    public string NonLinearity { get; init; } = "relu";
    /// <summary>Insert an adapter after the attention sub-layer (default true).</summary>
    public bool AfterAttention { get; init; } = true;
    /// <summary>Insert an adapter after the MLP sub-layer (default true).</summary>
    public bool AfterMlp { get; init; } = true;

    /// <summary>The bottleneck width for a model of <paramref name="hidden"/> size: hidden / <see cref="ReductionFactor"/>, at least 1.</summary>

    public int Bottleneck(int hidden)
    {
        if (ReductionFactor <= 0 || ReductionFactor > hidden) throw new ArgumentException($"reduction_factor must be in [1, {hidden}] (got {ReductionFactor})");
        return Math.Max(1, hidden / ReductionFactor);
    }

    /// <summary>adapter_config.json content for this config on a model of <paramref name="hidden"/> size trained on <paramref name="baseModel"/>.</summary>

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

    /// <summary>Reads a Houlsby adapter_config.json object (absent keys take the defaults).</summary>

    public static HoulsbyConfig FromJson(JsonObject j) => new()
    {
        ReductionFactor = j["reduction_factor"]?.GetValue<int>() ?? 16,
        NonLinearity = j["non_linearity"]?.GetValue<string>() ?? "relu",
        AfterAttention = j["after_attention"]?.GetValue<bool>() ?? true,
        AfterMlp = j["after_mlp"]?.GetValue<bool>() ?? true,
    };
}
