using PeftSharp.IO;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Models;

/// <summary>Llama 3.1-style rope scaling (rope_type "llama3").</summary>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings);

/// <summary>
/// The architecture facts of a Hugging Face config.json that the decoder needs, for the Llama family
/// (Llama 2/3/3.1/3.2, Mistral) and Qwen2/Qwen2.5. The raw JSON is kept so a merged or quantised model
/// can write the config back unchanged except for what it must change.
/// </summary>
public sealed class ModelConfig
{
    public static readonly string[] SupportedModelTypes = ["llama", "mistral", "qwen2"];

    public required string ModelType { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int VocabSize { get; init; }
    public double RmsNormEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10000.0;
    public RopeScaling? RopeScaling { get; init; }
    public bool TieWordEmbeddings { get; init; }
    /// <summary>Bias on q/k/v (Qwen2 always; Llama when attention_bias is true, then on o_proj too).</summary>
    public bool QkvBias { get; init; }
    public bool OBias { get; init; }
    public int MaxPositionEmbeddings { get; init; } = 2048;
    public int[] EosTokenIds { get; init; } = [];
    public int? BosTokenId { get; init; }
    public string TorchDtype { get; init; } = "float32";
    public JsonObject Raw { get; init; } = new();

    public static ModelConfig Load(string folderOrFile)
    {
        string path = Directory.Exists(folderOrFile) ? Path.Combine(folderOrFile, "config.json") : folderOrFile;
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: config.json not found", path);
        var raw = JsonFile.ReadObject(path, Memory.ModelConfig.MaxConfigBytes);
        try
        {
            // The planner's parse is the one validation of the shape fields (every command reads configs through here or it).
            Memory.ModelConfig.Parse(raw.ToJsonString());
            return FromJson(raw);
        }
        catch (Memory.PlanException e) { throw new InvalidDataException(e.Field == "model" ? $"{path}: {e.Reason}" : $"{path}: '{e.Field}' {e.Reason}"); }
        catch (Exception e) when (e is InvalidDataException or FormatException or InvalidOperationException)
        {
            throw new InvalidDataException($"{path}: {e.Message}");
        }
    }

    public static ModelConfig FromJson(JsonObject raw)
    {
        string type = raw["model_type"]?.GetValue<string>() ?? throw new InvalidDataException("config has no model_type");
        if (!SupportedModelTypes.Contains(type))
            throw new InvalidDataException($"unsupported model_type '{type}' (supported: {string.Join(", ", SupportedModelTypes)})");
        int Req(string k) => raw[k] is JsonNode n ? n.GetValue<int>() : throw new InvalidDataException($"config is missing '{k}'");
        int hidden = Req("hidden_size"), heads = Req("num_attention_heads");
        int kv = raw["num_key_value_heads"]?.GetValue<int>() ?? heads;
        int headDim = raw["head_dim"] is JsonNode hd && hd.GetValueKind() == JsonValueKind.Number ? hd.GetValue<int>() : hidden / Math.Max(1, heads);
        if (heads <= 0 || kv <= 0 || heads % kv != 0) throw new InvalidDataException($"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}");
        if (raw["head_dim"] is null && hidden % heads != 0) throw new InvalidDataException($"hidden_size {hidden} is not divisible by num_attention_heads {heads}");
        if (headDim % 2 != 0) throw new InvalidDataException($"head_dim {headDim} must be even for rotary embeddings");

        RopeScaling? scaling = null;
        if (raw["rope_scaling"] is JsonObject rs)
        {
            string rtype = (rs["rope_type"] ?? rs["type"])?.GetValue<string>() ?? "default";
            if (rtype == "llama3")
                scaling = new RopeScaling(rtype, rs["factor"]!.GetValue<double>(), rs["low_freq_factor"]!.GetValue<double>(),
                    rs["high_freq_factor"]!.GetValue<double>(), rs["original_max_position_embeddings"]!.GetValue<int>());
            else if (rtype != "default")
                throw new InvalidDataException($"unsupported rope_scaling type '{rtype}' (supported: llama3)");
        }
        bool attnBias = raw["attention_bias"]?.GetValue<bool>() ?? false;
        return new ModelConfig
        {
            ModelType = type,
            HiddenSize = hidden,
            IntermediateSize = Req("intermediate_size"),
            NumLayers = Req("num_hidden_layers"),
            NumHeads = heads,
            NumKvHeads = kv,
            HeadDim = headDim,
            VocabSize = Req("vocab_size"),
            RmsNormEps = raw["rms_norm_eps"]?.GetValue<double>() ?? 1e-6,
            RopeTheta = raw["rope_theta"]?.GetValue<double>() ?? 10000.0,
            RopeScaling = scaling,
            TieWordEmbeddings = raw["tie_word_embeddings"]?.GetValue<bool>() ?? false,
            QkvBias = type == "qwen2" || attnBias,
            OBias = type != "qwen2" && attnBias,
            MaxPositionEmbeddings = raw["max_position_embeddings"]?.GetValue<int>() ?? 2048,
            EosTokenIds = raw["eos_token_id"] switch
            {
                JsonArray a => a.Select(x => x!.GetValue<int>()).ToArray(),
                JsonValue v when v.GetValueKind() == JsonValueKind.Number => [v.GetValue<int>()],
                _ => [],
            },
            BosTokenId = raw["bos_token_id"] is JsonValue b && b.GetValueKind() == JsonValueKind.Number ? b.GetValue<int>() : null,
            TorchDtype = raw["torch_dtype"]?.GetValue<string>() ?? "float32",
            Raw = raw,
        };
    }
}
