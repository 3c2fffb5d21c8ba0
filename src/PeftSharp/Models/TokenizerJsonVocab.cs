using System.Text.Json.Nodes;

namespace PeftSharp.Models;

/// <summary>
/// The two lists of tokens a tokenizer.json holds, read one way for every reader (<see cref="TextTokenizer"/>'s vocab
/// size and special tokens, <see cref="TokenByteTable"/>'s pieces): the model's vocabulary and the added tokens.
/// </summary>
internal static class TokenizerJsonVocab
{
    /// <summary>(id, piece) of the model's vocabulary: BPE / WordPiece's {piece: id} object or Unigram's [[piece, score], ...] array.</summary>
    public static IEnumerable<(int Id, string Piece)> ModelPieces(JsonNode root)
    {
        if (root["model"]?["vocab"] is JsonObject vocab)
        {
            foreach (var (piece, id) in vocab)
                if (id is JsonValue v && v.TryGetValue<int>(out int i)) yield return (i, piece);
        }
        else if (root["model"]?["vocab"] is JsonArray unigram)
        {
            for (int i = 0; i < unigram.Count; i++)
                if (unigram[i]?[0] is JsonValue p && p.TryGetValue<string>(out var piece)) yield return (i, piece);
        }
    }

    /// <summary>(id, content, special) of each entry of added_tokens that has both a content and an id.</summary>
    public static IEnumerable<(int Id, string Content, bool Special)> AddedTokens(JsonNode root)
    {
        foreach (var t in (root["added_tokens"] as JsonArray ?? []).OfType<JsonObject>())
        {
            if (t["content"]?.GetValue<string>() is not { } c || t["id"] is not JsonNode id) continue;
            yield return (id.GetValue<int>(), c, t["special"]?.GetValue<bool>() == true);
        }
    }
}
