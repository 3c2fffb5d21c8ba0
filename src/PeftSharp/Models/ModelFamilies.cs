using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Models;

/// <summary>
/// The per-family readings of config.json that differ from Llama's, written as transformers' config classes
/// compute them (Mistral/Qwen2/Qwen3/Phi3/Gemma2 configuration_*.py and modeling_rope_utils.py).
/// </summary>
static class ModelFamilies
{
    /// <summary>
    /// Phi-3's "longrope": when config.json has a top-level <c>original_max_position_embeddings</c> the factor is
    /// max_position_embeddings / original (the rope_scaling "factor" is then ignored, as in transformers), and the
    /// default attention factor is sqrt(1 + ln(factor) / ln(original)).
    /// </summary>
    public static RopeScaling LongRope(JsonObject raw, JsonObject rs)
    {
        double[] Factors(string key) => rs[key] is JsonArray a ? a.Select(x => Number(x!)).ToArray()
            : throw new InvalidDataException($"rope_scaling type longrope needs '{key}'");
        int maxPos = raw["max_position_embeddings"]?.GetValue<int>() ?? 2048;
        int original;
        double factor;
        if ((raw["original_max_position_embeddings"] ?? rs["original_max_position_embeddings"]) is JsonValue o && o.GetValueKind() == JsonValueKind.Number)
        {
            original = o.GetValue<int>();
            factor = (double)maxPos / original;
        }
        else
        {
            original = maxPos;
            factor = rs["factor"] is JsonValue f && f.GetValueKind() == JsonValueKind.Number ? Number(f) : 1.0;
        }
        double attention = rs["attention_factor"] is JsonValue af && af.GetValueKind() == JsonValueKind.Number ? Number(af)
            : factor <= 1.0 ? 1.0 : Math.Sqrt(1 + Math.Log(factor) / Math.Log(original));
        return new RopeScaling("longrope", factor, 0, 0, original)
        {
            ShortFactor = Factors("short_factor"),
            LongFactor = Factors("long_factor"),
            AttentionFactor = attention,
        };
    }

    /// <summary>The MLP gate activation (as the planner's ModelConfig reads it), if the engine runs it.</summary>
    public static string Activation(string act) => act is "silu" or "gelu_pytorch_tanh" ? act
        : throw new InvalidDataException($"hidden_act '{act}' is not supported (supported: silu, gelu_pytorch_tanh)");

    /// <summary>A JSON number as a double, whether it was written as an integer or not.</summary>
    public static double Number(JsonNode node) =>
        double.Parse(node.ToJsonString(), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture);
}
