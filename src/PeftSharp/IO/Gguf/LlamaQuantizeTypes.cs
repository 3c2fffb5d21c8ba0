namespace PeftSharp.IO.Gguf;

/// <summary>
/// The per-tensor type llama-quantize gives each weight of a q4_0 or q4_K_M file (llama.cpp src/llama-quant.cpp
/// llama_tensor_get_type, no importance matrix, no overrides), so our export equals `llama-quantize f32.gguf Q4_K_M`:
/// the output head (or the tied token embedding) goes up to q6_K; for q4_K_M attn_v (and a fused attn_qkv, which
/// llama.cpp's category_is_attn_v counts with it) and ffn_down of the layers use_more_bits picks go up to q6_K. A row
/// that is not whole blocks of the chosen type falls back as llama.cpp does (q4_K -> q5_0, q6_K -> q8_0, then f16).
/// This is the llama.cpp of LLamaSharp 0.30.0; checked by the tests against its llama_model_quantize itself.
/// </summary>
internal static class LlamaQuantizeTypes
{
    /// <summary>The default (most tensors') type of a llama-quantize file type.</summary>
    public static GgmlType DefaultType(GgufFileType fileType) => fileType switch
    {
        GgufFileType.MostlyQ4_0 => GgmlType.Q4_0,
        GgufFileType.MostlyQ4_K_M => GgmlType.Q4_K,
        _ => throw new ArgumentException($"{fileType} is not a llama-quantize type"),
    };

    /// <summary>
    /// The type of the 2-D weight <paramref name="name"/> (GGUF name, rows of <paramref name="rowLength"/> values) in
    /// layer <paramref name="layer"/> of <paramref name="layers"/> (-1 outside the blocks); <paramref name="hasOutput"/>:
    /// the file has its own output.weight (untied). <paramref name="fallback"/> says why a tensor fell back, else null.
    /// </summary>
    public static GgmlType For(GgufFileType fileType, string name, long rowLength, int layer, int layers, bool hasOutput, out string? fallback)
    {
        var type = DefaultType(fileType);
        bool q4km = fileType == GgufFileType.MostlyQ4_K_M;
        if (name == "output.weight" || (!hasOutput && name == "token_embd.weight"))
            type = rowLength % GgmlTypes.Traits(type).BlockSize != 0 ? GgmlType.Q8_0 : GgmlType.Q6_K;
        // category_is_attn_v: attn_v and a fused attn_qkv (phi3) alike; the layer count is the model's, one per layer.
        else if (name.Contains("attn_v.weight", StringComparison.Ordinal) || name.Contains("attn_qkv.weight", StringComparison.Ordinal))
        {
            if (q4km && UseMoreBits(layer, layers)) type = GgmlType.Q6_K;
        }
        else if (name.Contains("ffn_down", StringComparison.Ordinal))
        {
            if (q4km && UseMoreBits(layer, layers)) type = GgmlType.Q6_K;
        }

        fallback = null;
        if (rowLength % GgmlTypes.Traits(type).BlockSize == 0) return type;
        var chosen = type;
        type = type switch
        {
            GgmlType.Q4_K => GgmlType.Q5_0,
            GgmlType.Q6_K => GgmlType.Q8_0,
            // llama-quantize stops with "Unsupported tensor size encountered" here; f16 keeps the export usable.
            _ => GgmlType.F16,
        };
        if (rowLength % GgmlTypes.Traits(type).BlockSize != 0) type = GgmlType.F16;
        fallback = $"{name}: rows of {rowLength} values are not whole {chosen} blocks of {GgmlTypes.Traits(chosen).BlockSize}; written as {type} (llama-quantize's fallback)";
        return type;
    }

    /// <summary>llama-quant.cpp use_more_bits: the first and last eighth of the layers, and every third one between.</summary>
    public static bool UseMoreBits(int layer, int layers) =>
        layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
}
