namespace PeftSharp.Generation;

/// <summary>
/// Cuts streamed text before the first stop sequence (OpenAI's <c>stop</c>): text that might be the start of a stop
/// sequence is held back until the next pieces show whether it is, so nothing of a stop sequence is ever emitted.
/// </summary>
internal sealed class StopSequenceFilter(IReadOnlyList<string> stops)
{
    readonly IReadOnlyList<string> _stops = stops.Where(s => s.Length > 0).ToList();
    string _pending = "";

    /// <summary>True once a stop sequence was seen; no more text comes.</summary>
    public bool Stopped { get; private set; }

    /// <summary>The text that can be emitted now, given the next piece.</summary>
    public string Push(string piece)
    {
        if (Stopped) return "";
        if (_stops.Count == 0) return piece;
        _pending += piece;
        int cut = _stops.Select(s => _pending.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
        if (cut >= 0)
        {
            Stopped = true;
            string before = _pending[..cut];
            _pending = "";
            return before;
        }
        int hold = HeldBack(_pending);
        string emit = _pending[..^hold];
        _pending = _pending[^hold..];
        return emit;
    }

    /// <summary>At the end of generation: what was held back (it did not become a stop sequence).</summary>
    public string Flush()
    {
        string rest = Stopped ? "" : _pending;
        _pending = "";
        return rest;
    }

    /// <summary>Length of the longest tail of <paramref name="text"/> that begins some stop sequence.</summary>
    int HeldBack(string text)
    {
        int longest = 0;
        foreach (var s in _stops)
            for (int n = Math.Min(s.Length - 1, text.Length); n > longest; n--)
                if (text.AsSpan(text.Length - n).SequenceEqual(s.AsSpan(0, n))) { longest = n; break; }
        return longest;
    }
}
