using System.Text;
using PeftSharp.Models;

namespace PeftSharp.Generation;

/// <summary>
/// Turns generated token ids into text increments whose concatenation is decode(prompt + generated) minus
/// decode(prompt), what Hugging Face's TextStreamer means to print, at a cost per token that does not grow with the
/// output: incremental detokenisation as vLLM and TGI do it. Each step decodes only a small window of ids, from
/// <c>_prefix</c> (already emitted, kept as context) to the end, and emits what the window's text gained past the
/// context's text. The context is why a SentencePiece "▁were" keeps its space after "Tom" (a decoder strips the
/// leading space of a text's first token only). Text ending in U+FFFD (a character whose bytes have not all arrived)
/// is held back until a later token completes it; <see cref="Flush"/> sends whatever is left, as a full decode gives it.
/// The decode function turns ids into text skipping special tokens, without clean-up (the server passes one that
/// serialises access to its tokenizer); the context is the prompt's ids. Where the tokenizer cleans up tokenization
/// spaces (HF's clean_up_tokenization: " ." to "." and so on), the streamer cleans the joined text itself, holding back
/// a trailing space (or " n", " '", ...) until the next piece decides it: at the cuts <see cref="TokenizationSpaces.SafeCut"/>
/// finds, the clean-up of the whole is the clean-ups of the pieces joined, so the streamed text is exactly the full
/// decode's continuation.
/// </summary>
internal sealed class TextStreamer
{
    /// <summary>Prompt ids kept as context before the first generated token (vLLM uses 5).</summary>
    const int ContextIds = 5;

    readonly Func<IReadOnlyList<int>, string> _decode;
    readonly List<int> _ids = new();
    readonly StringBuilder _text = new();
    int _prefix;          // first id of the decode window (context already emitted)
    int _read;            // first id whose text has not been emitted
    string _prefixText;   // decode(ids[_prefix.._read])
    readonly bool _cleanUp;
    string _held = "";    // decoded text after the last safe cut whose clean-up is not shown yet
    int _skip;            // leading characters of cleaned text that are the prompt's (its held tail), not to show

    public TextStreamer(Func<IReadOnlyList<int>, string> decode, IReadOnlyList<int>? context = null, bool cleanUpSpaces = false)
    {
        _decode = decode;
        if (context is not null) _ids.AddRange(context);
        _read = _ids.Count;
        _prefix = Math.Max(0, _read - ContextIds);
        _prefixText = Window(_prefix, _read);
        // Context of special tokens only decodes to nothing and would make the next token's text look like a
        // text start (losing its leading space): reach further back, once, until the context holds some text.
        while (_prefixText.Length == 0 && _prefix > 0)
        {
            _prefix = Math.Max(0, _prefix - ContextIds);
            _prefixText = Window(_prefix, _read);
        }
        _cleanUp = cleanUpSpaces;
        // The prompt's own unfinished tail (say "x ") waits with the first generated text: "x ." cleans to "x.", and the
        // continuation after decode(prompt) = "x " is then "" as a full decode slices it.
        if (_cleanUp)
        {
            _held = _prefixText[TokenizationSpaces.SafeCut(_prefixText)..];
            _skip = TokenizationSpaces.CleanUp(_held).Length;
        }
    }

    public TextStreamer(TextTokenizer tokenizer, IReadOnlyList<int>? context = null)
        : this(ids => tokenizer.Decode(ids, cleanUpSpaces: false), context, tokenizer.CleanUpTokenizationSpaces) { }

    /// <summary>All text emitted so far (after <see cref="Flush"/>, the whole continuation).</summary>
    public string Text => _text.ToString();

    public string Push(int id)
    {
        _ids.Add(id);
        string text = Window(_prefix, _ids.Count);
        if (text.Length <= _prefixText.Length || text.EndsWith('\uFFFD')) return "";
        return Show(Emit(text), final: false);
    }

    /// <summary>At the end of generation: text still held back (an unfinished character decodes as U+FFFD).</summary>
    public string Flush()
    {
        string text = _read == _ids.Count ? "" : Window(_prefix, _ids.Count);
        return Show(text.Length > _prefixText.Length ? Emit(text) : "", final: true);
    }

    /// <summary>The text a decoded delta adds to what is shown: itself, or with clean-up what of it is now certain.</summary>
    string Show(string delta, bool final)
    {
        if (_cleanUp)
        {
            _held += delta;
            int cut = final ? _held.Length : TokenizationSpaces.SafeCut(_held);
            delta = TokenizationSpaces.CleanUp(_held[..cut]);
            _held = _held[cut..];
            int skipped = Math.Min(_skip, delta.Length);
            delta = delta[skipped..];
            _skip -= skipped;
        }
        _text.Append(delta);
        return delta;
    }

    /// <summary>The decoded text the window gained (no clean-up); moves the window on.</summary>
    string Emit(string windowText)
    {
        string delta = windowText[_prefixText.Length..];
        // The ids just emitted become the next context, unless they decode to nothing on their own (special
        // tokens): then the window keeps its start and grows by them.
        string next = Window(_read, _ids.Count);
        if (next.Length > 0) { _prefix = _read; _prefixText = next; }
        else _prefixText = windowText;
        _read = _ids.Count;
        return delta;
    }

    string Window(int from, int to) => from == to ? "" : _decode(_ids.GetRange(from, to - from));
}
