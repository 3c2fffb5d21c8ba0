using System.Text;

namespace PeftSharp.Generation;

/// <summary>
/// The text of one generation as it streams, for every caller (PeftModel's stream and IChatClient, the server's
/// endpoints): a stop id ends it, <see cref="TextStreamer"/> turns the other ids into text (partial characters and
/// clean-up held back), <see cref="StopMatcher"/> cuts it at a stop string, and the tokens are counted as usage reports
/// them: up to and including the stop id, or the token whose text completes a stop string.
/// </summary>
internal sealed class GeneratedText(TextStreamer streamer, IReadOnlyCollection<int> stopIds, IReadOnlyList<string> stops)
{
    readonly StopMatcher _stops = new(stops);
    readonly StringBuilder _text = new();

    /// <summary>All text sent so far (after <see cref="Flush"/>, the whole reply).</summary>
    public string Text => _text.ToString();

    /// <summary>Characters of <see cref="Text"/> (what is final so far).</summary>
    public int Length => _text.Length;

    /// <summary>Generated tokens counted so far (usage's completion_tokens, OutputTokens).</summary>
    public int Tokens { get; private set; }

    /// <summary>A stop id arrived.</summary>
    public bool StopIdSeen { get; private set; }

    /// <summary>A stop string was found: the text ends before it.</summary>
    public bool StopStringMatched => _stops.Stopped;

    /// <summary>The reply has ended (stop id or stop string): later ids add nothing and are not counted.</summary>
    public bool Ended => StopIdSeen || _stops.Stopped;

    /// <summary>Whether <paramref name="id"/>, pushed now, is a token of the reply's text (not a stop id, not past the end).</summary>
    public bool IsText(int id) => !Ended && !stopIds.Contains(id);

    /// <summary>Adds one generated id; returns the text now safe to send.</summary>
    public string Push(int id)
    {
        if (Ended) return "";
        Tokens++;
        if (stopIds.Contains(id))
        {
            StopIdSeen = true;
            return "";
        }
        return Append(_stops.Push(streamer.Push(id)));
    }

    /// <summary>At the end of generation: the text held back (an unfinished character is sent as decoded, U+FFFD).</summary>
    public string Flush() => Append(_stops.Push(streamer.Flush()) + _stops.Flush());

    string Append(string delta)
    {
        _text.Append(delta);
        return delta;
    }
}
