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
    /// The window size and which layers it applies to. An explicit <c>layer_types</c> list wins, as in transformers.
    /// Mistral and Phi-3: every layer when <c>sliding_window</c> is set (Mistral's default is 4096, Phi-3's none).
    /// Qwen2/Qwen3: only with <c>use_sliding_window</c>, and then only layers at index &gt;= <c>max_window_layers</c>.
    /// That is current transformers' Qwen2Config/Qwen3Config.layer_types for every attention backend, and what the
    /// 4.4x releases the published configs were written with did in their flash-attention path
    /// (<c>layer_idx &gt;= max_window_layers</c>). Published Qwen2/2.5/3 configs set use_sliding_window false, so in
    /// practice they have no window in any version; the rule matters for configs that switch it on.
    /// Gemma 2: even-indexed layers are local (sliding), odd ones global.
    /// </summary>
    public static (int? Window, bool[] Layers) SlidingWindow(JsonObject raw, string type, int layers)
    {
        int? Field(int? absentDefault) => raw.ContainsKey("sliding_window")
            ? raw["sliding_window"] is JsonValue v && v.GetValueKind() == JsonValueKind.Number ? v.GetValue<int>() : null
            : absentDefault;
        int? window = type switch
        {
            "mistral" or "gemma2" => Field(4096),
            "phi3" => Field(null),
            "qwen2" or "qwen3" => raw["use_sliding_window"]?.GetValue<bool>() == true ? Field(4096) : null,
            _ => null,
        };
        if (window is <= 0) throw new InvalidDataException($"sliding_window must be positive, got {window}");
        bool[] sliding;
        if (raw["layer_types"] is JsonArray types)
        {
            if (types.Count != layers) throw new InvalidDataException($"layer_types has {types.Count} entries for {layers} layers");
            sliding = types.Select(t => t?.GetValue<string>() switch
            {
                "sliding_attention" => true,
                "full_attention" => false,
                var other => throw new InvalidDataException($"layer_types: unsupported '{other}' (supported: sliding_attention, full_attention)"),
            }).ToArray();
        }
        else
        {
            int maxWindowLayers = raw["max_window_layers"]?.GetValue<int>() ?? 28;
            sliding = Enumerable.Range(0, layers).Select(i => type switch
            {
                "qwen2" or "qwen3" => i >= maxWindowLayers,
                "gemma2" => (i + 1) % 2 != 0,
                _ => true,
            }).ToArray();
        }
        if (window is null) sliding = new bool[layers];
        return (window, sliding);
    }

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
