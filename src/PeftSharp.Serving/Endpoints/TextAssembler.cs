using PeftSharp.Generation;
using PeftSharp.Serving.Hosting;
using PeftSharp.Serving.OpenAi;
using PeftSharp.Serving.Scheduling;

namespace PeftSharp.Serving.Endpoints;

/// <summary>
/// The reply's text (<see cref="GeneratedText"/>: stop ids, partial characters, clean-up, stop strings, token count)
/// with what the server adds on top: the row leaves the batch once a stop string is found, and log probabilities.
/// </summary>
/// <remarks>
/// A token's logprob text is its own text (<see cref="ServerState.TokenTexts"/>), so the tokens join to the returned
/// text wherever the clean-up of tokenization spaces stays within tokens. Its text_offset is where that text starts in
/// the returned text: the tokens are lined up against the text as it becomes final, each where the one before ended.
/// Where the clean-up spans tokens (" '" + "m" reads "'m", " " + "." reads ".", " n" + "'t" reads "n't") it has only
/// removed the token's leading space, and the token is placed where the rest of its text stands (" '" at the "'", " "
/// at the next character). A token not in the text at all (each byte of one character reads U+FFFD) is placed where
/// the text stands and the next one after the text that was final once it arrived (all bytes at their character).
/// </remarks>
internal sealed class TextAssembler(ServerState s, IReadOnlyCollection<int> stopIds, string[] stops, IReadOnlyList<int> prompt, bool wantLogprobs)
{
    /// <summary>Ids before a token decoded with it for its logprob text (as the streamer's window, vLLM's 5).</summary>
    internal const int ContextIds = 5;

    readonly GeneratedText _text = new(s.Streamer(prompt), stopIds, stops);
    readonly List<int> _ids = [.. prompt];
    // Tokens whose text_offset waits for more final text, with the final text's length before and after each arrived.
    readonly Queue<(TokenText Token, float Logprob, (TokenText, float)[] Top, int Before, int After)> _unplaced = new();
    readonly List<TokenLogprob> _placed = new();
    int _placedSent, _at;

    public string Text => _text.Text;

    /// <summary>
    /// usage.completion_tokens (<see cref="GeneratedText.Tokens"/>). Not the job's count: the worker has decoded
    /// more tokens by the time the cancelled row leaves the batch.
    /// </summary>
    public int CompletionTokens => _text.Tokens;

    public string Push(GeneratedToken tok, CancellationTokenSource cancelRow)
    {
        int id = tok.Id;
        bool isText = _text.IsText(id);
        int before = _text.Length;
        string delta = _text.Push(id);
        if (_text.StopStringMatched) cancelRow.Cancel();   // the row leaves the batch at the next step
        if (isText)
        {
            if (tok.Top is { } top)
            {
                var texts = s.TokenTexts(_ids.GetRange(Math.Max(0, _ids.Count - ContextIds), Math.Min(_ids.Count, ContextIds)), top.Select(t => t.Id).Prepend(id));
                _unplaced.Enqueue((texts[0], tok.Logprob, top.Select((t, i) => (texts[i + 1], t.Logprob)).ToArray(), before, _text.Length));
            }
            _ids.Add(id);
        }
        return delta;
    }

    /// <summary>At the end: text held back for an unfinished UTF-8 character is sent as decoded (U+FFFD), as a full decode gives.</summary>
    public string Flush() => _text.Flush();

    /// <summary>
    /// The log probabilities not sent yet whose text has been sent (all at the end, unless a stop string cut the
    /// text: then those of tokens starting before the cut); null when none were asked for.
    /// </summary>
    public List<TokenLogprob>? TakeLogprobs(bool final)
    {
        if (!wantLogprobs) return null;
        Place(final);
        int limit = final && !_text.StopStringMatched ? int.MaxValue : _text.Length;
        var take = new List<TokenLogprob>();
        while (_placedSent < _placed.Count && _placed[_placedSent].TextOffset < limit) take.Add(_placed[_placedSent++]);
        if (final) _placedSent = _placed.Count;
        return take;
    }

    /// <summary>Gives text offsets to the tokens whose place the final text now decides (at the end, to all).</summary>
    void Place(bool final)
    {
        string text = _text.Text;
        while (_unplaced.TryPeek(out var t))
        {
            string token = t.Token.Text;
            int at = Math.Max(_at, t.Before);
            var rest = text.AsSpan(at);
            string? found = Found(rest, token);
            // Neither yet, but the text so far could still continue as either: wait until more of it is final.
            if (found is null && !final && (token.AsSpan().StartsWith(rest, StringComparison.Ordinal) || token.AsSpan().TrimStart(' ').StartsWith(rest, StringComparison.Ordinal))) return;
            // Not in the text at all (a byte of a character reads U+FFFD): the next token starts after what was final once it arrived.
            _at = found is not null ? at + found.Length : Math.Max(at, t.After);
            _placed.Add(new TokenLogprob(t.Token, t.Logprob, at, t.Top));
            _unplaced.Dequeue();
        }
    }

    /// <summary>
    /// A token's text as it stands at the start of <paramref name="rest"/>: whole, or without its leading space (the
    /// clean-up only removes spaces); null when neither.
    /// </summary>
    internal static string? Found(ReadOnlySpan<char> rest, string token) =>
        rest.StartsWith(token, StringComparison.Ordinal) ? token
            : token.StartsWith(' ') && rest.StartsWith(token.AsSpan(1), StringComparison.Ordinal) ? token[1..] : null;

    public string FinishReason(GenerationJob job) => _text.StopStringMatched ? "stop" : job.FinishReason == "length" ? "length" : "stop";
}
