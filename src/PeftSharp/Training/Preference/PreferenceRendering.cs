using PeftSharp.Data;

namespace PeftSharp.Training.Preference;

/// <summary>
/// The one place where conversational preference pairs become text. Today it uses <see cref="ChatFormat"/>, the
/// format `peft train` uses for {"messages"} data and `peft serve` uses for chat; when the model's own chat template
/// renderer lands, only <see cref="Conversation"/> changes.
/// </summary>
public static class PreferenceRendering
{
    /// <summary>
    /// Renders <paramref name="prompt"/> followed by <paramref name="response"/> and splits the segments where the
    /// response begins: the prompt's segments (all context), then the response's (its role headers are context, the
    /// content of its assistant messages is trained on).
    /// </summary>
    public static (IReadOnlyList<TextSegment> Prompt, IReadOnlyList<TextSegment> Response) Conversation(
        IReadOnlyList<(string Role, string Content)> prompt, IReadOnlyList<(string Role, string Content)> response)
    {
        var segments = ChatFormat.Render([.. prompt, .. response]);
        int split = 2 * prompt.Count;   // ChatFormat renders two segments (header, content) per message
        var promptSegs = segments.Take(split).Select(s => s with { Trainable = false }).ToList();
        return (promptSegs, segments.Skip(split).ToList());
    }
}
