using System.Text.Json;

namespace PeftSharp.Models;

/// <summary>
/// A Hugging Face tokenizer.json, through Tokenizers.DotNet (a wrapper of HF's own Rust tokenizers), so
/// ids match Python exactly. Encode adds no special tokens; callers add BOS/EOS where a format wants them.
/// </summary>
public sealed class TextTokenizer : IDisposable
{
    readonly Tokenizers.DotNet.Tokenizer _tok;

    public string Path { get; }
    public int? EosId { get; }
    public int? BosId { get; }
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    public TextTokenizer(string path, ModelConfig? config = null)
    {
        Path = path;
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: tokenizer.json not found", path);
        var special = new Dictionary<string, int>();
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            if (doc.RootElement.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
                foreach (var t in added.EnumerateArray())
                    if (t.TryGetProperty("special", out var s) && s.GetBoolean())
                        special[t.GetProperty("content").GetString()!] = t.GetProperty("id").GetInt32();
        }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON ({e.Message})"); }
        SpecialTokens = special;
        try { _tok = new Tokenizers.DotNet.Tokenizer(vocabPath: path); }
        catch (Tokenizers.DotNet.TokenizerException e) { throw new InvalidDataException($"{path}: tokenizer failed to load ({e.Message})"); }
        EosId = config?.EosTokenIds.FirstOrDefault() is int e1 && config.EosTokenIds.Length > 0 ? e1
            : special.TryGetValue("<|endoftext|>", out var e2) ? e2 : special.TryGetValue("</s>", out var e3) ? e3 : null;
        BosId = config?.BosTokenId;
    }

    /// <summary>Loads tokenizer.json from a model folder, with EOS/BOS from its config.json.</summary>
    public static TextTokenizer FromFolder(string folder, ModelConfig? config = null) =>
        new(System.IO.Path.Combine(folder, "tokenizer.json"), config ?? ModelConfig.Load(folder));

    public int[] Encode(string text) => Array.ConvertAll(_tok.Encode(text), x => (int)x);

    public string Decode(IEnumerable<int> ids) => _tok.Decode(ids.Select(i => (uint)i).ToArray());

    public void Dispose() => _tok.Dispose();
}
