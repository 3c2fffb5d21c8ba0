using PeftSharp.Models;

namespace PeftSharp.Generation;

/// <summary>
/// Turns a growing list of token ids into text increments. Byte-level tokens can split a UTF-8 character,
/// so text ending in U+FFFD is held back until the next token completes it.
/// </summary>
public sealed class TextStreamer(TextTokenizer tokenizer)
{
    readonly List<int> _ids = new();
    int _emitted;

    public string Push(int id)
    {
        _ids.Add(id);
        string text = tokenizer.Decode(_ids);
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

    public string Text => tokenizer.Decode(_ids);
}
