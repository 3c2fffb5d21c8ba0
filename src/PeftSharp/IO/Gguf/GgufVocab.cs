using System.Text.Json.Nodes;
using PeftSharp.Chat;
using PeftSharp.Models;

namespace PeftSharp.IO.Gguf;

/// <summary>
/// The tokenizer.* metadata of a GGUF model, from the folder's tokenizer.json as llama.cpp's convert_hf_to_gguf.py
/// writes it: byte-level BPE as <c>gpt2</c> (tokens in tokenizer.json's byte-level spelling, merges, and the
/// pre-tokenizer name llama.cpp selects its split regex by), BPE with byte fallback (Llama 2, TinyStories) as
/// sentencepiece <c>llama</c> (tokens, scores, types). bos/eos/unk/pad ids, add_bos/add_eos as HF's tokenizer(text)
/// adds them (<see cref="TextTokenizer.Prefix"/>), and the chat template.
/// </summary>
internal static class GgufVocab
{
    // llama_token_type (llama.cpp) / gguf TokenType.
    const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6;

    /// <summary>
    /// The split regexes of published tokenizer.json files under the names llama.cpp's llama-vocab.cpp gives them
    /// (convert_hf_to_gguf.py get_vocab_base_pre identifies them by hashing a tokenisation; the regex is what decides):
    /// export maps a regex to its name, reading a GGUF maps the name back.
    /// </summary>
    internal static readonly IReadOnlyDictionary<string, string> SplitRegexByPre = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["qwen2"] = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ["llama-bpe"] = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    };

    static readonly Dictionary<string, string> KnownSplitPatterns = SplitRegexByPre.ToDictionary(kv => kv.Value, kv => kv.Key, StringComparer.Ordinal);

    /// <summary>The tokenizer metadata of <paramref name="modelDir"/>, with <paramref name="chatTemplate"/> as tokenizer.chat_template (none when null).</summary>
    public static List<KeyValuePair<string, GgufValue>> Metadata(string modelDir, ModelConfig config, ChatTemplate? chatTemplate)
    {
        string path = Path.Combine(modelDir, "tokenizer.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: not found; GGUF export needs the model's tokenizer.json", path);
        var root = JsonFile.ReadObject(path);
        var model = root["model"] as JsonObject ?? throw new InvalidDataException($"{path}: no \"model\" object");
        string kind = model["type"]?.GetValue<string>() ?? "";
        if (kind != "BPE") throw new InvalidDataException($"{path}: tokenizer model '{kind}' cannot be exported to GGUF yet (supported: BPE, byte-level or with byte fallback)");
        bool spm = model["byte_fallback"]?.GetValue<bool>() == true;
        var vocab = model["vocab"] as JsonObject ?? throw new InvalidDataException($"{path}: model.vocab missing");

        int n = config.VocabSize;
        var tokens = new string?[n];
        var types = new int[n];
        void Put(string text, int id, int type)
        {
            if (id < 0 || id >= n) throw new InvalidDataException($"{path}: token '{text}' has id {id}, outside the model's vocab_size {n} (config.json)");
            tokens[id] = text;
            types[id] = type;
        }
        foreach (var (text, id) in vocab)
        {
            int i = id!.GetValue<int>();
            Put(text, i, spm && TokenByteTable.IsByteToken(text) ? Byte : Normal);
        }
        foreach (var t in (root["added_tokens"] as JsonArray ?? []).OfType<JsonObject>())
            Put(t["content"]!.GetValue<string>(), t["id"]!.GetValue<int>(), t["special"]?.GetValue<bool>() == true ? Control : UserDefined);

        using var tok = new TextTokenizer(path, config);
        if (spm && tok.UnkId is int unk && unk < n) types[unk] = Unknown;
        // Rows the embedding has beyond the tokenizer (padded vocabularies) get placeholder names, as the converter's.
        for (int i = 0; i < n; i++) if (tokens[i] is null) { tokens[i] = $"[PAD{i}]"; types[i] = Unused; }

        var meta = new List<KeyValuePair<string, GgufValue>>
        {
            new("tokenizer.ggml.model", GgufValue.Str(spm ? "llama" : "gpt2")),
            new("tokenizer.ggml.pre", GgufValue.Str(spm ? "default" : PreTokenizerName(root, path, config.ModelType))),
            new("tokenizer.ggml.tokens", GgufValue.Strings(tokens!)),
            new("tokenizer.ggml.token_type", GgufValue.Int32s(types)),
        };
        var merges = (model["merges"] as JsonArray ?? []).Select(m => m switch
        {
            JsonArray pair => $"{pair[0]!.GetValue<string>()} {pair[1]!.GetValue<string>()}",
            _ => m!.GetValue<string>(),
        }).ToList();
        if (spm) meta.Add(new("tokenizer.ggml.scores", GgufValue.Float32s(Scores(tokens!, merges))));
        else meta.Add(new("tokenizer.ggml.merges", GgufValue.Strings(merges)));

        // config.json's bos_token_id, else the token HF's tokenizer(text) puts first (tokenizer_config's bos_token).
        int? bosId = tok.BosId ?? (tok.Prefix.Length == 1 ? tok.Prefix[0] : null);
        if (bosId is int bos) meta.Add(new("tokenizer.ggml.bos_token_id", GgufValue.U32((uint)bos)));
        if (tok.EosId is int eos) meta.Add(new("tokenizer.ggml.eos_token_id", GgufValue.U32((uint)eos)));
        if (tok.UnkId is int u) meta.Add(new("tokenizer.ggml.unknown_token_id", GgufValue.U32((uint)u)));
        if (config.Raw["pad_token_id"] is JsonValue pad && pad.TryGetValue<int>(out int padId) && padId >= 0 && padId < n)
            meta.Add(new("tokenizer.ggml.padding_token_id", GgufValue.U32((uint)padId)));
        meta.Add(new("tokenizer.ggml.add_bos_token", GgufValue.Bool(tok.Prefix.Length > 0 && tok.Prefix[0] == bosId)));
        meta.Add(new("tokenizer.ggml.add_eos_token", GgufValue.Bool(tok.Suffix.Length > 0 && tok.Suffix[^1] == tok.EosId)));
        if (chatTemplate is not null) meta.Add(new("tokenizer.chat_template", GgufValue.Str(chatTemplate.Text)));
        return meta;
    }

    /// <summary>
    /// llama.cpp's sentencepiece tokenizer merges the adjacent pair whose joined token has the highest score, so a
    /// token made by HF's merge of rank r scores -r: that reproduces the BPE merge order. (convert_hf_to_gguf.py's
    /// LlamaHfVocab writes -1000 for every token, which leaves llama.cpp merging left to right.)
    /// </summary>
    static float[] Scores(string[] tokens, List<string> merges)
    {
        var rank = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int r = 0; r < merges.Count; r++)
        {
            int sp = merges[r].IndexOf(' ');
            string joined = merges[r][..sp] + merges[r][(sp + 1)..];
            rank.TryAdd(joined, r);
        }
        return tokens.Select(t => rank.TryGetValue(t, out int r) ? -(float)r : 0f).ToArray();
    }

    static string PreTokenizerName(JsonObject root, string path, string modelType)
    {
        var pre = root["pre_tokenizer"] as JsonObject;
        var parts = pre?["type"]?.GetValue<string>() == "Sequence" ? (pre["pretokenizers"] as JsonArray ?? []).OfType<JsonObject>().ToList() : pre is null ? [] : [pre];
        foreach (var p in parts)
        {
            if (p["type"]?.GetValue<string>() == "Split" && p["pattern"]?["Regex"]?.GetValue<string>() is { } regex)
                return KnownSplitPatterns.TryGetValue(regex, out var name) ? name
                    : throw new InvalidDataException($"{path}: pre-tokenizer split regex is not one llama.cpp knows by name, so llama.cpp would split text differently; GGUF export refused");
        }
        // ByteLevel's own regex is GPT-2's; SmolLM puts single-digit splitting before it.
        var types = parts.Select(p => p["type"]?.GetValue<string>() == "ByteLevel" && p["use_regex"]?.GetValue<bool>() != false ? "ByteLevel"
            : p["type"]?.GetValue<string>() == "Digits" && p["individual_digits"]?.GetValue<bool>() == true ? "Digits1" : "other").ToList();
        if (types.SequenceEqual(["ByteLevel"])) return "gpt-2";
        if (types.SequenceEqual(["Digits1", "ByteLevel"])) return "smollm";
        if (modelType == "qwen2") return "qwen2";
        throw new InvalidDataException($"{path}: pre-tokenizer is not one llama.cpp knows by name; GGUF export refused");
    }
}
