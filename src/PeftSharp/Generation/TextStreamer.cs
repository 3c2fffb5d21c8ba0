using PeftSharp.Models;

namespace PeftSharp.Generation;

/// <summary>
/// Turns a growing list of token ids into text increments. Byte-level tokens can split a UTF-8 character,
/// so text ending in U+FFFD is held back until the next token completes it. <paramref name="decode"/> turns all
/// ids so far into text (the server passes one that serialises access to its tokenizer).
/// </summary>
public sealed class TextStreamer(Func<IReadOnlyList<int>, string> decode)
{
    readonly List<int> _ids = new();
    int _emitted;

    public TextStreamer(TextTokenizer tokenizer) : this(tokenizer.Decode) { }

    public string Push(int id)
    {
        _ids.Add(id);
        string text = decode(_ids);
        if (text.EndsWith('\uFFFD') || text.Length < _emitted) return "";
        string delta = text[_emitted..];
        _emitted = text.Length;
        return delta;
    }

    /// <summary>At the end of generation: text still held back (an unfinished character decodes as U+FFFD).</summary>
    public string Flush()
    {
        string text = Text;
        string rest = text.Length > _emitted ? text[_emitted..] : "";
        _emitted = Math.Max(_emitted, text.Length);
        return rest;
    }

    public string Text => decode(_ids);
}
