using System.Text;
using System.Text.Json.Nodes;

namespace PeftSharp.Models;

/// <summary>
/// Each token's own raw bytes, as tokenizer.json's decoder turns the token's string (HF's convert_ids_to_tokens) back
/// into text, so that the bytes of consecutive tokens join to the UTF-8 of their decode even where one character is
/// split over several tokens (OpenAI's logprobs <c>bytes</c>). Per decoder: ByteLevel maps each character back
/// through GPT-2's bytes_to_unicode table (a token with a character outside it is its own UTF-8, as HF's decoder
/// falls back); ByteFallback reads a <c>&lt;0xXX&gt;</c> piece as that one byte; Replace (Llama's "▁" → " ") and
/// Metaspace replace; WordPiece drops its "##" prefix and puts a space before a word start; BPEDecoder turns its
/// end-of-word suffix into a space. Position-dependent steps (Strip, Metaspace's first-space removal, WordPiece's
/// first token) are left to the caller: a token here keeps the leading space it has in the middle of a text.
/// Special tokens have no bytes (decode skips them).
/// </summary>
internal sealed class TokenByteTable
{
    readonly Dictionary<int, string> _pieces = new();
    readonly HashSet<int> _special = new();
    readonly bool _byteLevel, _byteFallback;
    readonly List<(string From, string To)> _replace = new();
    readonly string? _wordPiecePrefix, _endOfWordSuffix;

    /// <summary>GPT-2's bytes_to_unicode inverted: the byte each printable stand-in character means.</summary>
    static readonly Dictionary<char, byte> ByteOfChar = BuildByteOfChar();

    static Dictionary<char, byte> BuildByteOfChar()
    {
        // bytes_to_unicode (openai/gpt-2 encoder.py): printable Latin-1 bytes stand for themselves; the rest, in
        // order, are shifted to U+0100 onwards.
        var map = new Dictionary<char, byte>();
        int shifted = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[printable ? (char)b : (char)(256 + shifted++)] = (byte)b;
        }
        return map;
    }

    internal TokenByteTable(JsonObject root)
    {
        foreach (var (id, piece) in TokenizerJsonVocab.ModelPieces(root)) _pieces[id] = piece;
        foreach (var (id, content, special) in TokenizerJsonVocab.AddedTokens(root))
        {
            _pieces[id] = content;
            if (special) _special.Add(id);
        }

        var decoders = root["decoder"] is JsonObject { } d && d["type"]?.GetValue<string>() == "Sequence"
            ? (d["decoders"] as JsonArray ?? []).OfType<JsonObject>().ToList()
            : root["decoder"] is JsonObject single ? [single] : [];
        foreach (var dec in decoders)
        {
            switch (dec["type"]?.GetValue<string>())
            {
                case "ByteLevel": _byteLevel = true; break;
                case "ByteFallback": _byteFallback = true; break;
                case "Replace":
                    if (dec["pattern"]?["String"]?.GetValue<string>() is { Length: > 0 } pattern) _replace.Add((pattern, dec["content"]?.GetValue<string>() ?? ""));
                    break;
                case "Metaspace":
                    _replace.Add((dec["replacement"]?.GetValue<string>() ?? "\u2581", " "));
                    break;
                case "WordPiece": _wordPiecePrefix = dec["prefix"]?.GetValue<string>() ?? "##"; break;
                case "BPEDecoder": _endOfWordSuffix = dec["suffix"]?.GetValue<string>() ?? "</w>"; break;
            }
        }
    }

    /// <summary>The raw bytes of token <paramref name="id"/> (empty for a special token or an id with no token).</summary>
    internal byte[] Of(int id)
    {
        if (_special.Contains(id) || !_pieces.TryGetValue(id, out var piece)) return [];
        if (_byteFallback && IsByteToken(piece)) return [Convert.ToByte(piece[3..5], 16)];
        if (_byteLevel)
        {
            var bytes = new byte[piece.Length];
            for (int i = 0; i < piece.Length; i++)
                if (ByteOfChar.TryGetValue(piece[i], out byte b)) bytes[i] = b;
                else return Encoding.UTF8.GetBytes(piece);
            return bytes;
        }
        foreach (var (from, to) in _replace) piece = piece.Replace(from, to, StringComparison.Ordinal);
        if (_wordPiecePrefix is { } prefix)
            piece = piece.StartsWith(prefix, StringComparison.Ordinal) ? piece[prefix.Length..] : " " + piece;
        if (_endOfWordSuffix is { } suffix) piece = piece.Replace(suffix, " ", StringComparison.Ordinal);
        return Encoding.UTF8.GetBytes(piece);
    }

    /// <summary>A SentencePiece byte-fallback piece such as &lt;0xE2&gt;: one byte of text the vocabulary has no piece for.</summary>
    internal static bool IsByteToken(string t) => t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>' && Uri.IsHexDigit(t[3]) && Uri.IsHexDigit(t[4]);
}
