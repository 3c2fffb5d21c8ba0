using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Models;

/// <summary>
/// A Hugging Face tokenizer.json (via Tokenizers.DotNet) with int ids. Tokenizers.DotNet always applies the
/// post-processor (a Llama BOS, for instance) and parses special-token text; <see cref="Encode"/> strips what the
/// post-processor added unless asked for it, so pieces of one example can be encoded separately and joined;
/// <see cref="Prefix"/>/<see cref="Suffix"/> are those tokens. <see cref="Decode"/> skips special tokens.
/// </summary>
public sealed class TextTokenizer
{
    static readonly string[] EosCandidates = ["<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "</s>", "<eos>"];

    readonly Tokenizers.DotNet.Tokenizer _tok;
    readonly Dictionary<string, int> _added;

    public string Path { get; }
    /// <summary>One more than the largest id in the vocabulary and the added tokens.</summary>
    public int VocabSize { get; }
    /// <summary>The end-of-sequence id: config.json's eos_token_id when given, else a well-known added token.</summary>
    public int? EosId { get; }

    /// <summary>Special tokens the post-processor puts before / after every encoded text (e.g. [BOS] for Llama).</summary>
    public int[] Prefix { get; }
    public int[] Suffix { get; }

    TextTokenizer(string path, Tokenizers.DotNet.Tokenizer tok, Dictionary<string, int> added, int vocabSize, int? eos, int[] prefix, int[] suffix)
    {
        Path = path; _tok = tok; _added = added; VocabSize = vocabSize; EosId = eos; Prefix = prefix; Suffix = suffix;
    }

    /// <summary>Loads tokenizer.json from a model folder (or the file itself); config.json beside it supplies eos_token_id.</summary>
    public static TextTokenizer Load(string folderOrFile)
    {
        string path = Directory.Exists(folderOrFile) ? System.IO.Path.Combine(folderOrFile, "tokenizer.json") : folderOrFile;
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: tokenizer.json not found", path);
        JsonObject root;
        try { root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: not a JSON object"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON ({e.Message})"); }

        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        if (root["added_tokens"] is JsonArray arr)
            foreach (var t in arr.OfType<JsonObject>())
                if (t["content"]?.GetValue<string>() is { } c && t["id"] is JsonNode id) added[c] = id.GetValue<int>();
        int maxId = added.Count > 0 ? added.Values.Max() : -1;
        if (root["model"]?["vocab"] is JsonObject vocab)
        {
            foreach (var (_, v) in vocab)
                if (v is JsonValue jv && jv.TryGetValue<int>(out int i)) maxId = Math.Max(maxId, i);
        }
        else if (root["model"]?["vocab"] is JsonArray uni) maxId = Math.Max(maxId, uni.Count - 1); // Unigram: [[piece, score], ...]

        int? eos = null;
        string configPath = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!, "config.json");
        if (File.Exists(configPath))
        {
            try { eos = ModelConfig.Load(configPath).EosTokenIds.Cast<int?>().FirstOrDefault(); }
            catch (InvalidDataException) { } // a config the decoder cannot use still leaves the tokenizer usable
        }
        eos ??= EosCandidates.Where(added.ContainsKey).Select(c => (int?)added[c]).FirstOrDefault();

        Tokenizers.DotNet.Tokenizer tok;
        try { tok = new Tokenizers.DotNet.Tokenizer(vocabPath: path); }
        catch (Exception e) { throw new InvalidDataException($"{path}: the tokenizer library cannot load it ({e.Message})"); }
        var (prefix, suffix) = PostProcessorTokens(root["post_processor"], added);
        return new TextTokenizer(path, tok, added, maxId + 1, eos, prefix, suffix);
    }

    /// <summary>The ids of <paramref name="text"/>; with <paramref name="addSpecialTokens"/>, wrapped in <see cref="Prefix"/>/<see cref="Suffix"/>.</summary>
    public int[] Encode(string text, bool addSpecialTokens = false)
    {
        int[] ids = text.Length == 0 ? [] : Array.ConvertAll(_tok.Encode(text), x => (int)x);
        int start = ids.AsSpan().StartsWith(Prefix) ? Prefix.Length : 0;
        int end = ids.Length - start >= Suffix.Length && ids.AsSpan(start).EndsWith(Suffix) ? ids.Length - Suffix.Length : ids.Length;
        var core = ids[start..end];
        return addSpecialTokens ? [.. Prefix, .. core, .. Suffix] : core;
    }

    /// <summary>
    /// Reads which special tokens the post-processor adds to a single sequence: TemplateProcessing's "single"
    /// template (also inside a Sequence of processors, as in Llama 3), or Bert/Roberta's cls/sep.
    /// </summary>
    static (int[] Prefix, int[] Suffix) PostProcessorTokens(JsonNode? pp, Dictionary<string, int> added)
    {
        if (pp is not JsonObject o) return ([], []);
        switch (o["type"]?.GetValue<string>())
        {
            case "Sequence":
                foreach (var inner in (o["processors"] as JsonArray ?? []))
                    if (PostProcessorTokens(inner, added) is { } r && (r.Prefix.Length > 0 || r.Suffix.Length > 0)) return r;
                return ([], []);
            case "TemplateProcessing":
            {
                var specials = o["special_tokens"] as JsonObject;
                var prefix = new List<int>();
                var suffix = new List<int>();
                bool afterSequence = false;
                foreach (var piece in (o["single"] as JsonArray ?? []).OfType<JsonObject>())
                {
                    if (piece.ContainsKey("Sequence")) { afterSequence = true; continue; }
                    string? id = piece["SpecialToken"]?["id"]?.GetValue<string>();
                    if (id is null) continue;
                    var ids = specials?[id]?["ids"] is JsonArray a ? a.Select(x => x!.GetValue<int>()) : added.TryGetValue(id, out int v) ? [v] : [];
                    (afterSequence ? suffix : prefix).AddRange(ids);
                }
                return (prefix.ToArray(), suffix.ToArray());
            }
            case "BertProcessing" or "RobertaProcessing":
                return ([o["cls"]![1]!.GetValue<int>()], [o["sep"]![1]!.GetValue<int>()]);
            default:
                return ([], []);
        }
    }

    public string Decode(IEnumerable<int> ids) => _tok.Decode(ids.Select(i => (uint)i).ToArray());

    /// <summary>The id of an added (special) token, when present.</summary>
    public int? SpecialId(string content) => _added.TryGetValue(content, out int id) ? id : null;
}
