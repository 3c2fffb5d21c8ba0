using PeftSharp.Generation;
using PeftSharp.IO;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Models;

/// <summary>
/// A Hugging Face tokenizer.json, through Tokenizers.DotNet (a wrapper of HF's own Rust tokenizers), so ids match
/// Python exactly. Tokenizers.DotNet always applies tokenizer.json's post-processor and parses special-token text;
/// <see cref="Encode"/> strips what that post-processor added, so pieces of one example can be encoded separately and
/// joined, and with addSpecialTokens wraps the text in <see cref="Prefix"/>/<see cref="Suffix"/>: the special tokens
/// HF's tokenizer(text) adds by default (post-processor and tokenizer_config.json's add_bos_token/add_eos_token, see
/// <see cref="SpecialTokenPolicy"/>). Training, eval, generate and serve all start a text with that prefix.
/// <see cref="Decode(IEnumerable{int})"/> skips special tokens and, where tokenizer_config.json sets clean_up_tokenization_spaces (Llama
/// 3/3.1 do), removes the spaces before punctuation and contractions as HF's decode does (<see cref="TokenizationSpaces"/>).
/// </summary>
public sealed class TextTokenizer : IDisposable
{
    static readonly string[] EosCandidates = ["<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "</s>", "<eos>"];

    readonly Tokenizers.DotNet.Tokenizer _tok;
    // Built on first use (only chat logprobs ask for raw bytes): an id -> bytes map of the whole vocabulary is
    // ~150k entries for Qwen, not worth holding for training or plain generation.
    readonly Lazy<TokenByteTable> _bytes;

    /// <summary>The tokenizer.json file this was loaded from.</summary>
    public string Path { get; }
    /// <summary>The end-of-sequence id: config.json's eos_token_id when given, else a well-known special token.</summary>
    public int? EosId { get; }
    /// <summary>config.json's bos_token_id, null when the config names none (or none was given).</summary>
    public int? BosId { get; }
    /// <summary>Added tokens marked special, by content.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }
    /// <summary>One more than the largest id in the vocabulary and the added tokens.</summary>
    public int VocabSize { get; }
    /// <summary>Special tokens HF's tokenizer(text) puts before / after every text by default (e.g. [BOS] for Llama).</summary>
    internal int[] Prefix { get; }
    internal int[] Suffix { get; }
    /// <summary>The folder's generation_config.json (empty when absent): its eos ids stop generation, its sampling fields are defaults.</summary>
    internal GenerationConfig Generation { get; }
    // What tokenizer.json's own post-processor adds (the native encoder always adds it; Encode strips it).
    readonly int[] _nativePrefix, _nativeSuffix;

    /// <summary>
    /// tokenizer_config.json's clean_up_tokenization_spaces: whether <see cref="Decode(IEnumerable{int})"/> applies HF's clean_up_tokenization.
    /// A missing key (or no tokenizer_config.json) is false, as in Python transformers since 4.45 (and LlamaTokenizer
    /// before); transformers.js would take it as true.
    /// </summary>
    internal bool CleanUpTokenizationSpaces { get; }

    /// <summary>The id the model emits for text its vocabulary cannot spell (&lt;unk&gt;), or null when it has none (byte-level BPE).</summary>
    public int? UnkId { get; }

    static int? UnknownTokenId(JsonObject? model, Dictionary<string, int> added)
    {
        if (model?["unk_id"] is JsonValue uid && uid.TryGetValue<int>(out int id)) return id; // Unigram
        if (model?["unk_token"] is not JsonValue u || !u.TryGetValue<string>(out var unk)) return null;
        if (added.TryGetValue(unk, out int a)) return a;
        return model["vocab"] is JsonObject vocab && vocab[unk] is JsonValue v && v.TryGetValue<int>(out int i) ? i : null;
    }

    internal TextTokenizer(string path, ModelConfig? config = null)
    {
        Path = path;
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: tokenizer.json not found", path);
        var root = JsonFile.ReadObject(path);

        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (id, content, isSpecial) in TokenizerJsonVocab.AddedTokens(root))
        {
            added[content] = id;
            if (isSpecial) special[content] = id;
        }
        SpecialTokens = special;
        int maxId = added.Count > 0 ? added.Values.Max() : -1;
        // Added tokens the vocabulary already holds at their declared id keep it (Gemma's thousands): no need to ask the encoder.
        var inVocabulary = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (id, piece) in TokenizerJsonVocab.ModelPieces(root))
        {
            maxId = Math.Max(maxId, id);
            if (added.TryGetValue(piece, out int declared) && declared == id) inVocabulary.Add(piece);
        }
        VocabSize = maxId + 1;
        UnkId = UnknownTokenId(root["model"] as JsonObject, added);
        (_nativePrefix, _nativeSuffix) = PostProcessorTokens(root["post_processor"], added);
        (Prefix, Suffix) = SpecialTokenPolicy.Resolve(root, (_nativePrefix, _nativeSuffix), added, path);
        _bytes = new(() => new TokenByteTable(JsonFile.ReadObject(path)));
        CleanUpTokenizationSpaces = SpecialTokenPolicy.ConfigFlag(path, "clean_up_tokenization_spaces", fallback: false);

        try { _tok = new Tokenizers.DotNet.Tokenizer(vocabPath: path); }
        catch (Tokenizers.DotNet.TokenizerException e) { throw new InvalidDataException($"{path}: tokenizer failed to load ({e.Message})"); }
        WarnOnRenumberedAddedTokens(path, added, inVocabulary);
        EosId = config is { EosTokenIds.Length: > 0 } ? config.EosTokenIds[0]
            : EosCandidates.Where(special.ContainsKey).Select(c => (int?)special[c]).FirstOrDefault();
        BosId = config?.BosTokenId;
        Generation = GenerationConfig.Load(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
    }

    /// <summary>
    /// HF's tokenizers library (ours, and transformers' fast tokenizers) gives an added token that is not in the model's
    /// vocabulary the next free id after the vocabulary, whatever id tokenizer.json declares for it, and transformers
    /// logs "Token '...' was expected to have ID 'N' but was given ID 'M'". The encoder then emits M where this class's
    /// maps (special tokens, masking, stop ids) hold N. Real tokenizers declare their added ids contiguously; a file with
    /// a gap gets the same warning here instead of silently disagreeing ids.
    /// </summary>
    void WarnOnRenumberedAddedTokens(string path, Dictionary<string, int> added, HashSet<string> inVocabulary)
    {
        foreach (var (content, id) in added)
        {
            if (inVocabulary.Contains(content)) continue;
            var ids = Array.ConvertAll(_tok.Encode(content), x => (int)x);
            if (Array.IndexOf(ids, id) >= 0) continue;
            var given = ids.Except(_nativePrefix).Except(_nativeSuffix).ToArray();
            PeftLogging.Warn($"{path}: added token '{content}' is declared with id {id}, but the tokenizer gives it {(given.Length == 1 ? $"id {given[0]}" : $"ids [{string.Join(", ", given)}]")} (HF's tokenizers number added tokens after the vocabulary, as transformers warns); ids of this token disagree between encoding and the declared id");
            return;   // one line: the rest of a gap follows the same rule
        }
    }

    /// <summary>Loads tokenizer.json from a model folder, with EOS/BOS from its config.json (or <paramref name="config"/> when given).</summary>
    /// <exception cref="FileNotFoundException">The folder has no tokenizer.json (or no config.json when <paramref name="config"/> is null).</exception>
    /// <exception cref="InvalidDataException">tokenizer.json is not a tokenizer the HF tokenizers library loads.</exception>
    public static TextTokenizer FromFolder(string folder, ModelConfig? config = null) =>
        new(System.IO.Path.Combine(folder, "tokenizer.json"), config ?? ModelConfig.Load(folder));

    /// <summary>
    /// A model folder or a tokenizer.json file; EOS/BOS come from the config.json next to it when there is one.
    /// </summary>
    /// <exception cref="FileNotFoundException">No tokenizer.json at that path.</exception>
    /// <exception cref="InvalidDataException">tokenizer.json is not a tokenizer the HF tokenizers library loads.</exception>
    public static TextTokenizer Load(string folderOrFile)
    {
        string path = Directory.Exists(folderOrFile) ? System.IO.Path.Combine(folderOrFile, "tokenizer.json") : folderOrFile;
        string config = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!, "config.json");
        return new TextTokenizer(path, File.Exists(config) ? ModelConfig.Load(config) : null);
    }

    /// <summary>
    /// The ids of <paramref name="text"/>, without the special tokens tokenizer.json's post-processor adds; with
    /// <paramref name="addSpecialTokens"/>, wrapped in the special tokens HF's tokenizer(text) adds by default (e.g.
    /// [BOS] for Llama), which is exactly what HF gives (an empty text gives that prefix alone).
    /// </summary>
    public int[] Encode(string text, bool addSpecialTokens = false)
    {
        int[] ids = text.Length == 0 ? [] : Array.ConvertAll(_tok.Encode(text), x => (int)x);
        int start = ids.AsSpan().StartsWith(_nativePrefix) ? _nativePrefix.Length : 0;
        int end = ids.Length - start >= _nativeSuffix.Length && ids.AsSpan(start).EndsWith(_nativeSuffix) ? ids.Length - _nativeSuffix.Length : ids.Length;
        var core = ids[start..end];
        return addSpecialTokens ? [.. Prefix, .. core, .. Suffix] : core;
    }

    /// <summary>
    /// The ids that end generation: every eos_token_id of <paramref name="config"/> and of generation_config.json (either
    /// may list several; Qwen2.5-Instruct's generation config adds &lt;|endoftext|&gt; to config.json's &lt;|im_end|&gt;) and <see cref="EosId"/>.
    /// </summary>
    internal IReadOnlySet<int> StopIds(ModelConfig config) =>
        config.EosTokenIds.Concat(Generation.EosTokenIds).Concat(EosId is int e ? [e] : []).ToHashSet();

    /// <summary>
    /// The text of <paramref name="ids"/>, special tokens skipped, as HF's decode(ids, skip_special_tokens=True) gives it
    /// (with clean_up_tokenization when tokenizer_config.json enables it).
    /// </summary>
    public string Decode(IEnumerable<int> ids) => Decode(ids, CleanUpTokenizationSpaces);

    /// <summary>
    /// Decode, with the clean-up as asked: <see cref="TextStreamer"/> decodes windows without it and cleans the
    /// joined text itself, since the clean-up spans token boundaries (" ." may come as two tokens).
    /// </summary>
    internal string Decode(IEnumerable<int> ids, bool cleanUpSpaces)
    {
        string text = _tok.Decode(ids.Select(i => (uint)i).ToArray());
        return cleanUpSpaces ? TokenizationSpaces.CleanUp(text) : text;
    }

    /// <summary>
    /// Token <paramref name="id"/>'s own raw bytes, as tokenizer.json's decoder maps its string back (a byte-fallback
    /// &lt;0xE2&gt; is that one byte, a byte-level piece of a multi-byte character only its own bytes), with the leading
    /// space it has inside a text; none for a special token (<see cref="TokenByteTable"/>).
    /// </summary>
    internal byte[] TokenBytes(int id) => _bytes.Value.Of(id);

    /// <summary>Frees the native tokenizer.</summary>
    public void Dispose() => _tok.Dispose();

    /// <summary>
    /// Which special tokens the post-processor adds to a single sequence: TemplateProcessing's "single" template
    /// (also inside a Sequence of processors, as in Llama 3), or Bert/Roberta's cls/sep.
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
}
