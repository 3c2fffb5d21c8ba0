using System.Text.Json.Nodes;
using PeftSharp.Data;

namespace PeftSharp.Chat;

/// <summary>
/// Assistant-only loss for templated chat, found as TRL finds it without {% generation %} markers: render the
/// conversation up to each assistant message with the generation prompt, and up to and including it; the difference
/// is the assistant's reply with the template's end-of-turn marker (e.g. "Paris&lt;|im_end|&gt;"), which is learned.
/// Everything else (system/user turns, role headers, whitespace after the end-of-turn marker) is context.
/// </summary>
internal static class ChatMasking
{
    /// <summary>The rendered conversation as segments; their concatenation is exactly Render(messages, false).</summary>
    public static List<TextSegment> Segments(ChatTemplate template, IReadOnlyList<JsonObject> messages, string where)
    {
        if (!messages.Any(m => m["role"]?.GetValue<string>() == "assistant"))
            throw new InvalidDataException($"{where}: 'messages' has no assistant message, so there is nothing to learn");
        // Errors name the example (file:line) before the template's own file and message.
        string Render(IReadOnlyList<JsonObject> m, bool gen)
        {
            try { return template.Render(m, gen); }
            catch (InvalidDataException e) { throw new InvalidDataException($"{where}: {e.Message}"); }
        }
        string full = Render(messages, false);
        var segments = new List<TextSegment>();
        int pos = 0;
        string? trailer = null;
        for (int i = 0; i < messages.Count; i++)
        {
            if (messages[i]["role"]!.GetValue<string>() != "assistant") continue;
            string before = Render(messages.Take(i).ToList(), true);
            string upTo = Render(messages.Take(i + 1).ToList(), false);
            if (!full.StartsWith(upTo, StringComparison.Ordinal) && EndOfConversation(template, upTo, full) is { } t)
            {
                trailer = t;
                upTo = upTo[..^t.Length];
            }
            else if (trailer is not null && upTo.Length == full.Length && upTo.EndsWith(trailer, StringComparison.Ordinal)) upTo = upTo[..^trailer.Length];
            if (!upTo.StartsWith(before, StringComparison.Ordinal) || !full.StartsWith(upTo, StringComparison.Ordinal) || before.Length < pos)
                throw new InvalidDataException($"{where}: the chat template ({template.Source}) cannot mark assistant spans: rendering the conversation " +
                    $"up to message {i + 1} is not a prefix of rendering all of it (the template changes earlier turns, or adds text after the last message " +
                    "whatever add_generation_prompt says), so the loss cannot be limited to the replies; pass --chat-template FILE with a template that can");
            string reply = upTo[before.Length..].TrimEnd();
            if (reply.Length == 0)
                throw new InvalidDataException($"{where}: the chat template ({template.Source}) renders assistant message {i + 1} as nothing, so there is nothing to learn");
            if (before.Length > pos) segments.Add(new TextSegment(full[pos..before.Length], false));
            segments.Add(new TextSegment(reply, true));
            pos = before.Length + reply.Length;
        }
        if (pos < full.Length) segments.Add(new TextSegment(full[pos..], false));
        return segments;
    }

    /// <summary>
    /// Text a template writes once, after the last message, when no generation prompt follows: Phi-3's
    /// "{% else %}{{ eos_token }}", the Llama-3 base template's assistant header. Rendering up to a middle reply then ends
    /// with it while the whole conversation goes on, so the reply would look rewritten. It is the longest tail of the
    /// empty conversation's rendering that ends both renderings and whose removal leaves a prefix of the whole; null
    /// when there is none (the template really rewrites earlier turns).
    /// </summary>
    static string? EndOfConversation(ChatTemplate template, string upTo, string full)
    {
        string empty;
        try { empty = template.Render(Array.Empty<JsonObject>(), false); }
        catch (InvalidDataException) { return null; }   // a template that refuses no messages has no known trailer
        for (int k = empty.Length; k > 0; k--)
        {
            string t = empty[^k..];
            if (upTo.EndsWith(t, StringComparison.Ordinal) && full.EndsWith(t, StringComparison.Ordinal) && full.StartsWith(upTo[..^k], StringComparison.Ordinal)) return t;
        }
        return null;
    }
}
