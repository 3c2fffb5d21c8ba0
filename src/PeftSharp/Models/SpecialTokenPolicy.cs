using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.IO;

namespace PeftSharp.Models;

/// <summary>
/// Which special tokens Hugging Face's tokenizer(text) adds by default, from tokenizer.json's post_processor and
/// tokenizer_config.json, as transformers decides it: LlamaTokenizerFast (also CodeLlama, Gemma) always rebuilds the
/// post-processor from add_bos_token (default true) / add_eos_token (default false); PreTrainedTokenizerFast (v5)
/// rebuilds it when tokenizer_config.json sets either flag or tokenizer.json has no post-processor (then with the
/// flags, default false); otherwise tokenizer.json's post-processor is used as written.
/// </summary>
static class SpecialTokenPolicy
{
    static readonly HashSet<string> RebuildingClasses = ["LlamaTokenizer", "CodeLlamaTokenizer", "GemmaTokenizer"];

    public static (int[] Prefix, int[] Suffix) Resolve(JsonObject tokenizerJson, (int[] Prefix, int[] Suffix) postProcessor,
        IReadOnlyDictionary<string, int> added, string tokenizerPath)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(tokenizerPath))!;
        string configPath = Path.Combine(dir, "tokenizer_config.json");
        var config = File.Exists(configPath) ? JsonFile.ReadObject(configPath) : null;
        string? cls = config?["tokenizer_class"] is JsonValue c && c.GetValueKind() == JsonValueKind.String ? c.GetValue<string>() : null;
        bool llamaStyle = cls is not null && RebuildingClasses.Contains(cls.EndsWith("Fast") ? cls[..^4] : cls);
        bool explicitFlags = config is not null && (config.ContainsKey("add_bos_token") || config.ContainsKey("add_eos_token"));
        bool noPostProcessor = tokenizerJson["post_processor"] is not JsonObject;
        if (!llamaStyle && !explicitFlags && !noPostProcessor) return postProcessor;

        bool addBos = Flag(config, "add_bos_token", llamaStyle, configPath);
        bool addEos = Flag(config, "add_eos_token", false, configPath);
        var specialMap = Path.Combine(dir, "special_tokens_map.json");
        int[] bos = addBos ? TokenId("bos_token", config, configPath, specialMap, tokenizerJson, added) : [];
        int[] eos = addEos ? TokenId("eos_token", config, configPath, specialMap, tokenizerJson, added) : [];
        return (bos, eos);
    }

    /// <summary>A true/false field of the tokenizer_config.json beside <paramref name="tokenizerPath"/>; <paramref name="fallback"/> when the file or field is absent.</summary>
    public static bool ConfigFlag(string tokenizerPath, string field, bool fallback)
    {
        string configPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(tokenizerPath))!, "tokenizer_config.json");
        return File.Exists(configPath) ? Flag(JsonFile.ReadObject(configPath), field, fallback, configPath) : fallback;
    }

    static bool Flag(JsonObject? config, string field, bool fallback, string path) => config?[field] switch
    {
        null => fallback,
        JsonValue v when v.GetValueKind() is JsonValueKind.True or JsonValueKind.False => v.GetValue<bool>(),
        var other => throw new InvalidDataException($"{path}: '{field}' must be true or false (got {other.ToJsonString()})"),
    };

    /// <summary>The id of bos_token/eos_token (a string or an AddedToken object); none when the token is null, as HF then adds nothing.</summary>
    static int[] TokenId(string field, JsonObject? config, string configPath, string specialMapPath, JsonObject tokenizerJson, IReadOnlyDictionary<string, int> added)
    {
        JsonNode? node = config?[field];
        string source = configPath;
        if (node is null && !(config?.ContainsKey(field) ?? false) && File.Exists(specialMapPath))
        {
            node = JsonFile.ReadObject(specialMapPath)[field];
            source = specialMapPath;
        }
        string? content = node switch
        {
            null => null,
            JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
            JsonObject o when o["content"] is JsonValue cv && cv.GetValueKind() == JsonValueKind.String => cv.GetValue<string>(),
            _ => throw new InvalidDataException($"{source}: '{field}' must be a string or an object with 'content' (got {node.ToJsonString()})"),
        };
        if (content is null) return [];
        if (added.TryGetValue(content, out int id)) return [id];
        if (tokenizerJson["model"]?["vocab"] is JsonObject vocab && vocab[content] is JsonValue jv && jv.TryGetValue<int>(out id)) return [id];
        throw new InvalidDataException($"{source}: '{field}' is '{content}', which is not in the tokenizer's vocabulary");
    }
}
