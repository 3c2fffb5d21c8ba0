using PeftSharp.IO;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Models;

/// <summary>
/// Rope scaling: Llama 3.1-style ("llama3") or Phi-3's "longrope" (per-frequency short/long factors chosen by the
/// sequence length, cos/sin multiplied by <see cref="AttentionFactor"/>).
/// </summary>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings)
{
    /// <summary>longrope (Phi-3): per-frequency factors used up to original_max_position_embeddings.</summary>
    public double[]? ShortFactor { get; init; }
    /// <summary>longrope (Phi-3): per-frequency factors used past original_max_position_embeddings.</summary>
    public double[]? LongFactor { get; init; }
    /// <summary>longrope/yarn: the attention scaling applied to cos/sin (1 when the config does not set one).</summary>
    public double AttentionFactor { get; init; } = 1.0;
}

/// <summary>
/// The architecture facts of a Hugging Face config.json that the decoder needs, for the Llama family
/// (Llama 2/3/3.1/3.2, Mistral), Qwen2/Qwen2.5, Qwen3, Phi-3/3.5/4-mini and Gemma 2. The raw JSON is kept so a
/// merged or quantised model can write the config back unchanged except for what it must change.
/// A view over the planner's <see cref="Memory.ModelConfig"/> (<see cref="Shape"/>): config.json is read once, its shape
/// fields parsed and validated there only; this type adds what only the engine needs (rope, norms, family flags).
/// Family rules live in <see cref="ModelFamilies"/>.
/// </summary>
public sealed class ModelConfig
{
    /// <summary>The model_type values the engine runs (the planner also sizes gpt2 and gemma).</summary>
    public static readonly string[] SupportedModelTypes = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2"];

    /// <summary>The shape fields as the planner parsed and validated them (the one parse every command shares).</summary>
    public required Memory.ModelConfig Shape { get; init; }
    /// <summary>HF's model_type (one of <see cref="SupportedModelTypes"/>).</summary>
    public string ModelType => Shape.ModelType;
    /// <summary>hidden_size.</summary>
    public int HiddenSize => Shape.HiddenSize;
    /// <summary>intermediate_size (the MLP's width).</summary>
    public int IntermediateSize => Shape.IntermediateSize;
    /// <summary>num_hidden_layers.</summary>
    public int NumLayers => Shape.NumHiddenLayers;
    /// <summary>num_attention_heads.</summary>
    public int NumHeads => Shape.NumAttentionHeads;
    /// <summary>num_key_value_heads (num_attention_heads when absent).</summary>
    public int NumKvHeads => Shape.KeyValueHeads;
    /// <summary>head_dim (hidden_size / num_attention_heads when absent).</summary>
    public int HeadDim => Shape.ResolvedHeadDim;
    /// <summary>vocab_size.</summary>
    public int VocabSize => Shape.VocabSize;
    /// <summary>tie_word_embeddings (default: true for Gemma, false otherwise, as transformers' configs have it).</summary>
    public bool TieWordEmbeddings => Shape.TieWordEmbeddings;
    /// <summary>Bias on q/k/v (Qwen2 always; Llama when attention_bias is true, then on o_proj too).</summary>
    public bool QkvBias => ModelType == "qwen2" || Shape.AttentionBias;
    /// <summary>Bias on o_proj (attention_bias, except Qwen2, whose o_proj has none).</summary>
    public bool OBias => ModelType != "qwen2" && Shape.AttentionBias;
    /// <summary>max_position_embeddings, 2048 when absent.</summary>
    public int MaxPositionEmbeddings => Shape.MaxPositionEmbeddings > 0 ? Shape.MaxPositionEmbeddings : 2048;
    /// <summary>rms_norm_eps: the epsilon of every RMSNorm; default 1e-6.</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary>rope_theta: the rotary base frequency; default 10000.</summary>
    public double RopeTheta { get; init; } = 10000.0;
    /// <summary>rope_scaling (llama3, linear, dynamic, longrope, ...); null when absent.</summary>
    public RopeScaling? RopeScaling { get; init; }
    /// <summary>eos_token_id (one id or a list); empty when absent.</summary>
    public int[] EosTokenIds { get; init; } = [];
    /// <summary>bos_token_id; null when absent.</summary>
    public int? BosTokenId { get; init; }
    /// <summary>
    /// The dtype the weights were saved in (float32, float16, bfloat16), as config.json writes it: <c>dtype</c>
    /// (transformers 4.56 and later) or <c>torch_dtype</c> (earlier; <see cref="DtypeOf"/>); default float32.
    /// </summary>
    public string TorchDtype { get; init; } = "float32";
    /// <summary>Sliding-window size in tokens (a query sees itself and the window - 1 keys before it), or null.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary>Per layer: true where the sliding window applies (HF's layer_types "sliding_attention").</summary>
    public bool[] SlidingLayers { get; init; } = [];
    /// <summary>Qwen3: per-head RMSNorm on queries and keys (self_attn.q_norm / k_norm) before rotary.</summary>
    public bool QkNorm { get; init; }
    /// <summary>Phi-3: fused self_attn.qkv_proj and mlp.gate_up_proj.</summary>
    public bool FusedProjections { get; init; }
    /// <summary>Leading dims of each head that rotate (head_dim * partial_rotary_factor); the rest pass through.</summary>
    public int RotaryDim { get; init; }
    /// <summary>Gemma 2: norms scale by (1 + w), embeddings by sqrt(hidden), and the MLP is wrapped in pre/post norms and the attention output in a post norm.</summary>
    public bool GemmaBlock { get; init; }
    /// <summary>MLP gate activation: "silu" or "gelu_pytorch_tanh".</summary>
    public string HiddenAct { get; init; } = "silu";
    /// <summary>Attention score scale (1/sqrt(head_dim), Gemma 2: query_pre_attn_scalar^-0.5).</summary>
    public double AttentionScale { get; init; }
    /// <summary>Gemma 2's attn_logit_softcapping: attention scores pass through cap * tanh(s / cap); null = none.</summary>
    public double? AttnLogitSoftcapping { get; init; }
    /// <summary>Gemma 2's final_logit_softcapping: the LM head's logits pass through cap * tanh(x / cap); null = none.</summary>
    public double? FinalLogitSoftcapping { get; init; }

    /// <summary>The sliding window of one layer, or null where it attends to everything before it.</summary>
    public int? WindowOf(int layer) => SlidingWindow is { } w && layer < SlidingLayers.Length && SlidingLayers[layer] ? w : null;
    /// <summary>The whole config.json as read, for keys this type does not model (written back unchanged on merge/export).</summary>
    public JsonObject Raw { get; init; } = new();

    /// <summary>
    /// config.json's weight dtype, or null when it names none. transformers renamed <c>torch_dtype</c> to <c>dtype</c>
    /// (huggingface/transformers#39782, released in 4.56); its PreTrainedConfig still reads <c>torch_dtype</c>, and
    /// keeps <c>dtype</c> when a file has both (src/transformers/configuration_utils.py, __post_init__). So here.
    /// </summary>
    internal static string? DtypeOf(JsonObject raw)
    {
        foreach (string key in (string[])["dtype", "torch_dtype"])
            if (raw[key] is { } v)
                return v is JsonValue s && s.GetValueKind() == JsonValueKind.String ? s.GetValue<string>()
                    : throw new InvalidDataException($"'{key}' must be a string such as \"bfloat16\", got {v.ToJsonString()}");
        return null;
    }

    /// <summary>
    /// Records <paramref name="dtype"/> as the weight dtype of <paramref name="raw"/> (a config.json being written):
    /// <c>torch_dtype</c>, which every transformers release reads, and <c>dtype</c> too when the file has it (newer
    /// transformers prefer it, so a stale one would win).
    /// </summary>
    internal static void SetDtype(JsonObject raw, string dtype)
    {
        raw["torch_dtype"] = dtype;
        if (raw.ContainsKey("dtype")) raw["dtype"] = dtype;
    }

    /// <summary>A model folder's config.json (or that file): read once, its errors naming the file and the key.</summary>
    public static ModelConfig Load(string folderOrFile)
    {
        string path = Directory.Exists(folderOrFile) ? Path.Combine(folderOrFile, "config.json") : folderOrFile;
        if (!File.Exists(path))
            throw new FileNotFoundException(Directory.Exists(folderOrFile) && File.Exists(Path.Combine(folderOrFile, "adapter_config.json"))
                ? $"{folderOrFile}: an adapter folder (adapter_config.json), not a model; load it as the adapter on its base model"
                : $"{path}: config.json not found", path);
        var raw = JsonFile.ReadObject(path, Memory.ModelConfig.MaxConfigBytes);
        try { return FromJson(raw); }
        catch (Exception e) when (e is InvalidDataException or FormatException or InvalidOperationException)
        {
            throw new InvalidDataException($"{path}: {e.Message}");
        }
    }

    /// <summary>
    /// The engine's view of a parsed config.json: the planner's <see cref="Memory.ModelConfig.FromJson"/> parses and
    /// validates the shape (its errors become <see cref="InvalidDataException"/>s naming the key); this adds the rest.
    /// </summary>
    public static ModelConfig FromJson(JsonObject raw)
    {
        string type = raw["model_type"] is JsonValue t && t.GetValueKind() == JsonValueKind.String ? t.GetValue<string>() : throw new InvalidDataException("config has no model_type");
        if (!SupportedModelTypes.Contains(type))
            throw new InvalidDataException($"unsupported model_type '{type}' (supported: {string.Join(", ", SupportedModelTypes)})");
        Memory.ModelConfig shape;
        try { shape = Memory.ModelConfig.FromJson(raw); }
        catch (Memory.PlanException e) { throw new InvalidDataException(e.Field == "model" ? e.Reason : $"'{e.Field}' {e.Reason}"); }
        int headDim = shape.ResolvedHeadDim;
        if (headDim % 2 != 0) throw new InvalidDataException($"head_dim {headDim} must be even for rotary embeddings");

        RopeScaling? scaling = null;
        if (raw["rope_scaling"] is JsonObject rs)
        {
            string rtype = (rs["rope_type"] ?? rs["type"])?.GetValue<string>() ?? "default";
            if (rtype == "llama3")
                scaling = new RopeScaling(rtype, rs["factor"]!.GetValue<double>(), rs["low_freq_factor"]!.GetValue<double>(),
                    rs["high_freq_factor"]!.GetValue<double>(), rs["original_max_position_embeddings"]!.GetValue<int>());
            // Early Phi-3 128k configs say "su" (or "yarn"); transformers' Phi3Config renames both to longrope.
            else if (rtype == "longrope" || (type == "phi3" && rtype is "su" or "yarn"))
                scaling = ModelFamilies.LongRope(raw, rs);
            else if (rtype != "default")
                throw new InvalidDataException($"unsupported rope_scaling type '{rtype}' (supported: llama3, longrope)");
        }
        int layers = shape.NumHiddenLayers;
        double rotaryFactor = raw["partial_rotary_factor"] is JsonNode prf ? ModelFamilies.Number(prf) : 1.0;
        int rotaryDim = (int)(headDim * rotaryFactor);
        if (rotaryDim <= 0 || rotaryDim % 2 != 0 || rotaryDim > headDim)
            throw new InvalidDataException($"partial_rotary_factor {rotaryFactor} gives {rotaryDim} rotary dims of head_dim {headDim} (must be even and positive)");
        if (scaling is { Type: "longrope" } lr && (lr.ShortFactor!.Length != rotaryDim / 2 || lr.LongFactor!.Length != rotaryDim / 2))
            throw new InvalidDataException($"rope_scaling short_factor/long_factor have {lr.ShortFactor.Length}/{lr.LongFactor!.Length} entries; rotary dim {rotaryDim} needs {rotaryDim / 2}");
        bool gemma = type == "gemma2";
        return new ModelConfig
        {
            Shape = shape,
            RmsNormEps = raw["rms_norm_eps"]?.GetValue<double>() ?? 1e-6,
            RopeTheta = raw["rope_theta"]?.GetValue<double>() ?? 10000.0,
            RopeScaling = scaling,
            EosTokenIds = raw["eos_token_id"] switch
            {
                JsonArray a => a.Select(x => x!.GetValue<int>()).ToArray(),
                JsonValue v when v.GetValueKind() == JsonValueKind.Number => [v.GetValue<int>()],
                _ => [],
            },
            BosTokenId = raw["bos_token_id"] is JsonValue b && b.GetValueKind() == JsonValueKind.Number ? b.GetValue<int>() : null,
            TorchDtype = DtypeOf(raw) ?? "float32",
            Raw = raw,
            // The planner's parse (it counts the KV cache by them): read there once.
            SlidingWindow = shape.SlidingWindow,
            SlidingLayers = shape.SlidingLayers.Length == layers ? shape.SlidingLayers : new bool[layers],
            QkNorm = type == "qwen3",
            FusedProjections = type == "phi3",
            RotaryDim = rotaryDim,
            GemmaBlock = gemma,
            // The planner's parse of these (it counts memory by them): read there once.
            HiddenAct = ModelFamilies.Activation(shape.HiddenAct),
            AttentionScale = shape.AttentionScale,
            AttnLogitSoftcapping = shape.AttnLogitSoftcapping,
            FinalLogitSoftcapping = shape.FinalLogitSoftcapping,
        };
    }
}
