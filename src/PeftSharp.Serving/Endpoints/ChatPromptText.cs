using PeftSharp.Chat;

namespace PeftSharp.Serving.Endpoints;

/// <summary>The prompt of a chat request: the model's chat template (or the simple format); a conversation it refuses is a 400.</summary>
static class ChatPromptText
{
    public static string Render(ChatPrompter? chat, IReadOnlyList<(string Role, string Content)> messages)
    {
        try { return (chat ?? ChatPrompter.Simple).RenderPrompt(messages); }
        catch (Exception e) when (e is InvalidDataException or ArgumentException) { throw ServingException.BadRequest(e.Message); }
    }
}
