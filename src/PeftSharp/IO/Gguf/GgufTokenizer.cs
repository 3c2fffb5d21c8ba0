using System.Text.Json.Nodes;

namespace PeftSharp.IO.Gguf;

/// <summary>
/// A Hugging Face tokenizer.json (and tokenizer_config.json) rebuilt from a GGUF's <c>tokenizer.ggml.*</c> metadata,
/// so the tokenizer llama.cpp runs is run by HF's own library (Tokenizers.DotNet):
/// <list type="bullet">
/// <item><c>gpt2</c> (byte-level BPE): tokens and merges as stored, the split regex of <c>tokenizer.ggml.pre</c>
/// (the ones llama.cpp's llama-vocab.cpp names; <c>llama-bpe</c> with ignore_merges, as both HF and llama.cpp do).</item>
/// <item><c>llama</c> (sentencepiece): what transformers' LlamaConverter makes of a sentencepiece BPE model: BPE with
/// byte fallback, merges from the scores by convert_slow_tokenizer.generate_merges, the "▁" prepend/replace
/// normalizer (add_space_prefix) and its decoder.</item>
/// </list>
/// CONTROL and UNKNOWN tokens become special added tokens, USER_DEFINED ones plain added tokens; add_bos/add_eos become
/// the post-processor; <c>tokenizer.chat_template</c> becomes tokenizer_config.json's chat_template.
/// </summary>
internal static class GgufTokenizer
{
    // llama_token_type (llama.cpp) / gguf TokenType.
    const int Unknown = 2, Control = 3, UserDefined = 4;

    /// <summary>(tokenizer.json, tokenizer_config.json) for the GGUF read by <paramref name="r"/>.</summary>
    public static (JsonObject Tokenizer, JsonObject TokenizerConfig) Build(GgufReader r)
    {
        string model = Has(r, "tokenizer.ggml.model") ? r.GetString("tokenizer.ggml.model") : throw Bad(r, "has no tokenizer (tokenizer.ggml.model is missing)");
        if (model is not ("llama" or "gpt2"))
            throw Bad(r, $"tokenizer.ggml.model '{model}' is not supported (supported: llama (sentencepiece), gpt2 (byte-level BPE))");
        var tokens = Strings(r, "tokenizer.ggml.tokens");
        var types = Has(r, "tokenizer.ggml.token_type") ? Ints(r, "tokenizer.ggml.token_type") : new int[tokens.Length];
        if (types.Length != tokens.Length) throw Bad(r, $"tokenizer.ggml.token_type has {types.Length} entries for {tokens.Length} tokens");

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < tokens.Length; i++) vocab[tokens[i]] = i; // a duplicate piece keeps its last id, as in a Python dict
        int? Id(string key) => r.Metadata.TryGetValue(key, out var v) && v.Value is not string && v.AsUInt64() < (ulong)tokens.Length ? (int)v.AsUInt64() : null;
        int? bos = Id("tokenizer.ggml.bos_token_id"), eos = Id("tokenizer.ggml.eos_token_id");
        int? unk = Id("tokenizer.ggml.unknown_token_id"), pad = Id("tokenizer.ggml.padding_token_id");
        bool spm = model == "llama";
        // llama.cpp's defaults when the flags are absent: sentencepiece adds BOS, byte-level BPE does not.
        bool addBos = Flag(r, "tokenizer.ggml.add_bos_token") ?? spm;
        bool addEos = Flag(r, "tokenizer.ggml.add_eos_token") ?? false;

        var added = new JsonArray();
        for (int i = 0; i < tokens.Length; i++)
        {
            bool special = types[i] is Control or Unknown || (spm && i == unk);
            if (!special && types[i] != UserDefined) continue;
            added.Add(new JsonObject
            {
                ["id"] = i, ["content"] = tokens[i], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = false, ["special"] = special,
            });
        }

        var bpe = new JsonObject
        {
            ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = spm && unk is int u ? tokens[u] : null,
            ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null, ["fuse_unk"] = spm, ["byte_fallback"] = spm,
        };
        var tok = new JsonObject { ["version"] = "1.0", ["truncation"] = null, ["padding"] = null, ["added_tokens"] = added };
        if (spm)
        {
            bool prefixSpace = Flag(r, "tokenizer.ggml.add_space_prefix") ?? true;
            var scores = Has(r, "tokenizer.ggml.scores") ? Floats(r, "tokenizer.ggml.scores") : new float[tokens.Length];
            if (scores.Length != tokens.Length) throw Bad(r, $"tokenizer.ggml.scores has {scores.Length} entries for {tokens.Length} tokens");
            var replace = new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "▁" };
            tok["normalizer"] = prefixSpace
                ? new JsonObject { ["type"] = "Sequence", ["normalizers"] = new JsonArray(new JsonObject { ["type"] = "Prepend", ["prepend"] = "▁" }, replace) }
                : replace;
            tok["pre_tokenizer"] = null;
            var decoders = new JsonArray(
                new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "▁" }, ["content"] = " " },
                new JsonObject { ["type"] = "ByteFallback" }, new JsonObject { ["type"] = "Fuse" });
            if (prefixSpace) decoders.Add(new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 });
            tok["decoder"] = new JsonObject { ["type"] = "Sequence", ["decoders"] = decoders };
            bpe["merges"] = new JsonArray(GenerateMerges(tokens, vocab, scores).Select(m => (JsonNode)new JsonArray(m.Left, m.Right)).ToArray());
        }
        else
        {
            string pre = Has(r, "tokenizer.ggml.pre") ? r.GetString("tokenizer.ggml.pre") : "default";
            tok["normalizer"] = pre == "qwen2" ? new JsonObject { ["type"] = "NFC" } : null;
            tok["pre_tokenizer"] = PreTokenizer(r, pre);
            tok["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true };
            bpe["ignore_merges"] = pre == "llama-bpe";
            bpe["merges"] = new JsonArray(Strings(r, "tokenizer.ggml.merges").Select(m => (JsonNode)m).ToArray());
        }
        tok["post_processor"] = PostProcessor(tokens, addBos ? bos : null, addEos ? eos : null);
        bpe["vocab"] = new JsonObject(vocab.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value)));
        tok["model"] = bpe;

        var config = new JsonObject
        {
            ["add_bos_token"] = addBos, ["add_eos_token"] = addEos,
            ["tokenizer_class"] = spm ? "LlamaTokenizerFast" : "PreTrainedTokenizerFast",
        };
        if (bos is int b) config["bos_token"] = tokens[b];
        if (eos is int e) config["eos_token"] = tokens[e];
        if (unk is int un) config["unk_token"] = tokens[un];
        if (pad is int p) config["pad_token"] = tokens[p];
        if (Has(r, "tokenizer.chat_template")) config["chat_template"] = r.GetString("tokenizer.chat_template");
        return (tok, config);
    }

    /// <summary>
    /// transformers' convert_slow_tokenizer.generate_merges with scores: every split of every token into two tokens,
    /// per token ordered by the parts' ids, then all of them by (score, left length, right length) descending, stably.
    /// </summary>
    public static List<(string Left, string Right)> GenerateMerges(string[] tokens, Dictionary<string, int> vocab, float[] scores)
    {
        var all = new List<(string L, string R, float Score, int LenL, int LenR)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int id = 0; id < tokens.Length; id++)
        {
            string merge = tokens[id];
            if (!seen.Add(merge)) continue; // a duplicate piece is one dict entry in Python, at its first position, with its last score
            float score = scores[vocab[merge]];
            var local = new List<(string L, string R, float Score, int LenL, int LenR)>();
            // Python slices by code point; a surrogate pair is one character there.
            var starts = CodePointStarts(merge);
            for (int k = 1; k < starts.Count; k++)
            {
                string l = merge[..starts[k]], rr = merge[starts[k]..];
                if (vocab.ContainsKey(l) && vocab.ContainsKey(rr)) local.Add((l, rr, score, k, starts.Count - k));
            }
            all.AddRange(local.OrderBy(x => vocab[x.L]).ThenBy(x => vocab[x.R]));
        }
        return all.OrderByDescending(x => x.Score).ThenByDescending(x => x.LenL).ThenByDescending(x => x.LenR)
            .Select(x => (x.L, x.R)).ToList();
    }

    static List<int> CodePointStarts(string s)
    {
        var starts = new List<int>(s.Length);
        for (int i = 0; i < s.Length; i++) if (!char.IsLowSurrogate(s[i]) || i == 0 || !char.IsHighSurrogate(s[i - 1])) starts.Add(i);
        return starts;
    }

    static JsonObject PreTokenizer(GgufReader r, string pre)
    {
        JsonObject ByteLevel(bool useRegex) => new() { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = useRegex };
        JsonObject Sequence(params JsonObject[] parts) => new() { ["type"] = "Sequence", ["pretokenizers"] = new JsonArray(parts) };
        if (GgufVocab.SplitRegexByPre.TryGetValue(pre, out var regex))
            return Sequence(new JsonObject
            {
                ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = regex }, ["behavior"] = "Isolated", ["invert"] = false,
            }, ByteLevel(false));
        return pre switch
        {
            "gpt-2" or "default" => ByteLevel(true),
            "smollm" => Sequence(new JsonObject { ["type"] = "Digits", ["individual_digits"] = true }, ByteLevel(true)),
            _ => throw Bad(r, $"tokenizer.ggml.pre '{pre}' is not a pre-tokenizer PeftSharp can rebuild (supported: gpt-2, default, qwen2, llama-bpe, smollm)"),
        };
    }

    static JsonObject PostProcessor(string[] tokens, int? bos, int? eos)
    {
        if (bos is null && eos is null)
            return new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = false, ["use_regex"] = true };
        var specials = new JsonObject();
        foreach (int id in new[] { bos, eos }.OfType<int>().Distinct())
            specials[tokens[id]] = new JsonObject { ["id"] = tokens[id], ["ids"] = new JsonArray(id), ["tokens"] = new JsonArray(tokens[id]) };
        // As transformers' LlamaConverter writes it: "[bos] $A [eos]", the pair "[bos] $A [eos] [bos] $B [eos]" (type 1).
        JsonArray Template(params (string Seq, int Type)[] parts)
        {
            var a = new JsonArray();
            foreach (var (seq, type) in parts)
            {
                if (bos is int b) a.Add(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = tokens[b], ["type_id"] = type } });
                a.Add(new JsonObject { ["Sequence"] = new JsonObject { ["id"] = seq, ["type_id"] = type } });
                if (eos is int e) a.Add(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = tokens[e], ["type_id"] = type } });
            }
            return a;
        }
        return new JsonObject { ["type"] = "TemplateProcessing", ["single"] = Template(("A", 0)), ["pair"] = Template(("A", 0), ("B", 1)), ["special_tokens"] = specials };
    }

    static bool Has(GgufReader r, string key) => r.Metadata.ContainsKey(key);
    static bool? Flag(GgufReader r, string key) => r.Metadata.TryGetValue(key, out var v) && v.Value is bool b ? b : null;

    static string[] Strings(GgufReader r, string key) =>
        r.Get(key).Value as string[] ?? throw Bad(r, $"{key} is not an array of strings");
    static float[] Floats(GgufReader r, string key) =>
        r.Get(key).Value as float[] ?? throw Bad(r, $"{key} is not an array of float32");
    static int[] Ints(GgufReader r, string key) => r.Get(key).Value switch
    {
        int[] a => a,
        uint[] u => Array.ConvertAll(u, x => (int)x),
        _ => throw Bad(r, $"{key} is not an array of int32"),
    };

    static InvalidDataException Bad(GgufReader r, string cause) => new($"{r.Path}: {cause}");
}
