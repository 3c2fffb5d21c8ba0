namespace PeftSharp.Data;

/// <summary>A piece of an example's text and whether the loss is taken on its tokens.</summary>
public sealed record TextSegment(string Text, bool Trainable);

/// <summary>
/// One training example before tokenisation: an ordered list of segments, and where it came from
/// (file:line) for error messages.
/// </summary>
public sealed record RawExample(IReadOnlyList<TextSegment> Segments, string Source)
{
    public static RawExample Text(string text, string source) => new([new TextSegment(text, true)], source);

    public static RawExample PromptCompletion(string prompt, string completion, string source) =>
        new([new TextSegment(prompt, false), new TextSegment(completion, true)], source);

    /// <summary>
    /// The prompt and expected answer used for exact-match evaluation: everything before the last segment, and
    /// the last segment, when that one is trained on and something untrained precedes it. Null for plain text.
    /// </summary>
    public (string Prompt, string Completion)? PromptAndAnswer =>
        Segments.Count >= 2 && Segments[^1].Trainable && Segments.Take(Segments.Count - 1).Any(s => !s.Trainable)
            ? (string.Concat(Segments.Take(Segments.Count - 1).Select(s => s.Text)), Segments[^1].Text)
            : null;
}
