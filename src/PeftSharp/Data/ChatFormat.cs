using System.Text;

namespace PeftSharp.Data;

/// <summary>
/// The one chat format PeftSharp trains and serves with: each message is "&lt;|role|&gt;\n" followed by its content
/// and "\n"; a generation prompt appends "&lt;|assistant|&gt;\n" so the model continues as the assistant.
/// Example: [("system","Be brief."),("user","Hi")] → "&lt;|system|&gt;\nBe brief.\n&lt;|user|&gt;\nHi\n&lt;|assistant|&gt;\n".
/// </summary>
public static class ChatFormat
{
    public static string Render(IEnumerable<(string Role, string Content)> messages, bool addGenerationPrompt)
    {
        var sb = new StringBuilder();
        foreach (var (role, content) in messages)
        {
            if (string.IsNullOrWhiteSpace(role) || role.Any(c => c is '<' or '>' or '|' || char.IsWhiteSpace(c)))
                throw new ArgumentException($"chat role '{role}' must be a non-empty word without '<', '>', '|' or spaces");
            sb.Append("<|").Append(role).Append("|>\n").Append(content).Append('\n');
        }
        if (addGenerationPrompt) sb.Append("<|assistant|>\n");
        return sb.ToString();
    }
}
