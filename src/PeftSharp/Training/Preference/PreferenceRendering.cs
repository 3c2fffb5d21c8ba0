using PeftSharp.Chat;
using PeftSharp.Data;

namespace PeftSharp.Training.Preference;

/// <summary>
/// The one place where conversational preference pairs become text: with the model's chat template (see
/// <see cref="ChatPrompter"/>, --chat-template honoured) split as TRL's maybe_apply_chat_template splits them, else
/// PeftSharp's simple <see cref="ChatFormat"/> with the same one-line note as SFT.
/// </summary>
internal static class PreferenceRendering
{
    /// <summary>
    /// Renders <paramref name="prompt"/> followed by <paramref name="response"/> and splits the segments where the
    /// response begins: the prompt's segments (all context), then the response's. With a template (Rendered): the
    /// prompt is the prompt messages rendered with add_generation_prompt=True, the response the rest of the whole
    /// conversation's rendering (trained on, its trailing whitespace left as context as in SFT's chat masking); a
    /// whole rendering that does not start with the prompt's is an error naming <paramref name="where"/>. With the
    /// simple format: role headers are context, the content of the response's assistant messages is trained on.
    /// </summary>
    public static (IReadOnlyList<TextSegment> Prompt, IReadOnlyList<TextSegment> Response, bool Rendered) Conversation(
        IReadOnlyList<(string Role, string Content)> prompt, IReadOnlyList<(string Role, string Content)> response, ChatPrompter chat, string where)
    {
        if (chat.UseForTraining() is not { } template)
        {
            var segments = ChatFormat.Render([.. prompt, .. response]);
            int split = 2 * prompt.Count;   // ChatFormat renders two segments (header, content) per message
            var promptSegs = segments.Take(split).Select(s => s with { Trainable = false }).ToList();
            return (promptSegs, segments.Skip(split).ToList(), false);
        }
        string Render(IEnumerable<(string Role, string Content)> messages, bool addGenerationPrompt)
        {
            try { return template.Render(messages, addGenerationPrompt); }
            catch (InvalidDataException e) { throw new InvalidDataException($"{where}: {e.Message}"); }
        }
        string promptText = Render(prompt, addGenerationPrompt: true);
        string full = Render([.. prompt, .. response], addGenerationPrompt: false);
        if (!full.StartsWith(promptText, StringComparison.Ordinal))
            throw new InvalidDataException($"{where}: the chat template ({template.Source}) renders the whole conversation as text that does not start with " +
                "its prompt rendered with add_generation_prompt=True, so the response cannot be split from the prompt; pass --chat-template FILE with a template that can");
        string rest = full[promptText.Length..], reply = rest.TrimEnd();
        if (reply.Length == 0) throw new InvalidDataException($"{where}: the chat template ({template.Source}) renders the response as nothing, so there is nothing to learn");
        List<TextSegment> responseSegs = [new(reply, true)];
        if (rest.Length > reply.Length) responseSegs.Add(new TextSegment(rest[reply.Length..], false));
        return ([new TextSegment(promptText, false)], responseSegs, true);
    }
}
