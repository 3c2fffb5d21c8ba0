namespace PeftSharp.Data;

/// <summary>
/// The chat format used for {"messages": [...]} examples and by `peft serve`'s chat endpoint. Each message is rendered
/// as <c>&lt;|role|&gt;\n{content}</c>, messages are joined by "\n", and the end-of-sequence token follows the
/// last message. The loss is taken on the content of "assistant" messages (and the final EOS) only; role headers,
/// separators and other roles' content are context. The same format must be used at inference time.
/// Example: [("system","Be brief."),("user","Hi")] with a generation prompt →
/// "&lt;|system|&gt;\nBe brief.\n&lt;|user|&gt;\nHi\n&lt;|assistant|&gt;\n".
/// </summary>
internal static class ChatFormat
{
    public static string Header(string role) => $"<|{role}|>\n";

    public static IReadOnlyList<TextSegment> Render(IReadOnlyList<(string Role, string Content)> messages)
    {
        var segments = new List<TextSegment>();
        for (int i = 0; i < messages.Count; i++)
        {
            var (role, content) = messages[i];
            segments.Add(new TextSegment((i > 0 ? "\n" : "") + Header(role), false));
            segments.Add(new TextSegment(content, role == "assistant"));
        }
        return segments;
    }

    /// <summary>
    /// The prompt text for inference: the messages as in training and, with <paramref name="addGenerationPrompt"/>,
    /// the assistant header that training puts before an assistant reply, so the model continues as the assistant.
    /// </summary>
    public static string Render(IEnumerable<(string Role, string Content)> messages, bool addGenerationPrompt)
    {
        var list = messages.ToList();
        foreach (var (role, _) in list)
            if (string.IsNullOrWhiteSpace(role) || role.Any(c => c is '<' or '>' or '|' || char.IsWhiteSpace(c)))
                throw new ArgumentException($"chat role '{role}' must be a non-empty word without '<', '>', '|' or spaces");
        string text = string.Concat(Render(list).Select(s => s.Text));
        return addGenerationPrompt ? text + (list.Count > 0 ? "\n" : "") + Header("assistant") : text;
    }
}
