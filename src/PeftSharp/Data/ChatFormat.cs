namespace PeftSharp.Data;

/// <summary>
/// The chat format used for {"messages": [...]} examples. Each message is rendered as
/// <c>&lt;|role|&gt;\n{content}</c>, messages are joined by "\n", and the end-of-sequence token follows the
/// last message. The loss is taken on the content of "assistant" messages (and the final EOS) only; role headers,
/// separators and other roles' content are context. The same format must be used at inference time.
/// </summary>
public static class ChatFormat
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
}
