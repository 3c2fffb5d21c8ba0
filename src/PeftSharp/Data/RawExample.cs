namespace PeftSharp.Data;

/// <summary>A piece of an example's text and whether the loss is taken on its tokens.</summary>
internal sealed record TextSegment(string Text, bool Trainable);

/// <summary>
/// One training example before tokenisation: an ordered list of segments, and where it came from
/// (file:line) for error messages.
/// </summary>
internal sealed record RawExample(IReadOnlyList<TextSegment> Segments, string Source)
{
    /// <summary>
    /// A conversation rendered by the model's chat template: the text already holds its special tokens (BOS, end-of-turn),
    /// so it is encoded whole with nothing added (see <see cref="SequenceBuilder.Tokenize"/>).
    /// </summary>
    public bool Rendered { get; init; }

    public static RawExample Text(string text, string source) => new([new TextSegment(text, true)], source);

    public static RawExample PromptCompletion(string prompt, string completion, string source) =>
        new([new TextSegment(prompt, false), new TextSegment(completion, true)], source);

    /// <summary>
    /// The prompt and expected answer used for exact-match evaluation: everything before the last segment, and
    /// the last segment, when that one is trained on and something untrained precedes it. Null for plain text.
    /// </summary>
    /// A rendered conversation's answer is its last assistant reply (what follows it, e.g. a newline, is left out).
    public (string Prompt, string Completion)? PromptAndAnswer
    {
        get
        {
            int last = Segments.Count - 1;
            if (Rendered) while (last >= 0 && !Segments[last].Trainable) last--;
            return last >= 1 && Segments[last].Trainable && Segments.Take(last).Any(s => !s.Trainable)
                ? (string.Concat(Segments.Take(last).Select(s => s.Text)), Segments[last].Text)
                : null;
        }
    }
}
