namespace PeftSharp.Serving.OpenAi;

/// <summary>
/// Applies OpenAI "stop" strings to streamed text: the stop string and what follows are never sent, and text that
/// could still become the start of a stop string is held back until it cannot.
/// </summary>
public sealed class StopMatcher(IReadOnlyList<string> stops)
{
    readonly System.Text.StringBuilder _text = new();
    int _sent;
    readonly int _hold = stops.Count == 0 ? 0 : stops.Max(s => s.Length) - 1;

    public bool Stopped { get; private set; }

    /// <summary>Adds generated text; returns the text now safe to send.</summary>
    public string Push(string delta)
    {
        if (Stopped) return "";
        _text.Append(delta);
        string all = _text.ToString();
        int cut = stops.Select(s => all.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
        if (cut >= 0)
        {
            Stopped = true;
            return Take(all, Math.Max(cut, _sent));
        }
        return Take(all, Math.Max(_sent, all.Length - _hold));
    }

    /// <summary>At the end of generation: whatever was held back.</summary>
    public string Flush() => Stopped ? "" : Take(_text.ToString(), _text.Length);

    string Take(string all, int upTo)
    {
        string s = all[_sent..upTo];
        _sent = upTo;
        return s;
    }
}
