using System.Text.Json.Nodes;

namespace PeftSharp.Demo;

/// <summary>
/// Writes a Hugging Face tokenizer.json for a closed word list: the WordLevel model with the Whitespace
/// pre-tokenizer (words and runs of punctuation), special tokens first. Decoding joins tokens with spaces
/// (no decoder), so text written with single spaces between tokens round-trips exactly.
/// </summary>
internal static class WordLevelTokenizerJson
{
    public const string Eos = "<|endoftext|>", Unk = "<unk>";

    public static string Build(IEnumerable<string> words)
    {
        var vocab = new JsonObject();
        var added = new JsonArray();
        int id = 0;
        foreach (var special in new[] { Eos, Unk })
        {
            added.Add(new JsonObject
            {
                ["id"] = id, ["content"] = special, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = false, ["special"] = true,
            });
            vocab[special] = id++;
        }
        foreach (var w in words.Distinct()) vocab[w] = id++;
        var root = new JsonObject
        {
            ["version"] = "1.0", ["truncation"] = null, ["padding"] = null, ["added_tokens"] = added,
            ["normalizer"] = null, ["pre_tokenizer"] = new JsonObject { ["type"] = "Whitespace" },
            ["post_processor"] = null, ["decoder"] = null,
            ["model"] = new JsonObject { ["type"] = "WordLevel", ["vocab"] = vocab, ["unk_token"] = Unk },
        };
        return root.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
    }
}
