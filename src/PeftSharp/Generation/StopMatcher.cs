namespace PeftSharp.Generation;

/// <summary>
/// Applies OpenAI "stop" strings to streamed text: the stop string and what follows are never sent, and text that
/// could still become the start of a stop string is held back until it cannot. One matcher for the library's stream
/// (PeftModel.GenerateUpdates, the IChatClient) and the server's endpoints.
/// </summary>
internal sealed class StopMatcher(IReadOnlyList<string> stops)
{
    readonly int _hold = stops.Count == 0 ? 0 : stops.Max(s => s.Length) - 1;
    // Only the last _hold characters of the text are kept: a match that is new when text arrives must end in that
    // text, so it starts no earlier (one lying wholly in earlier text was found when that text arrived).
    // _unsent of them, at the end, are held back.
    string _tail = "";
    int _unsent;

    public bool Stopped { get; private set; }

    /// <summary>Adds generated text; returns the text now safe to send.</summary>
    public string Push(string delta)
    {
        if (Stopped) return "";
        if (stops.Count == 0) return delta;
        string text = _tail + delta;
        int sent = _tail.Length - _unsent;
        int cut = -1;
        foreach (var stop in stops)
            if (text.IndexOf(stop, StringComparison.Ordinal) is var i and >= 0 && (cut < 0 || i < cut)) cut = i;
        if (cut >= 0)
        {
            Stopped = true;
            return text[sent..Math.Max(cut, sent)];
        }
        int upTo = Math.Max(sent, text.Length - _hold);
        _tail = text[Math.Max(0, text.Length - _hold)..];
        _unsent = text.Length - upTo;
        return text[sent..upTo];
    }

    /// <summary>At the end of generation: whatever was held back.</summary>
    public string Flush()
    {
        if (Stopped) return "";
        string rest = _tail[^_unsent..];
        _unsent = 0;
        return rest;
    }
}
