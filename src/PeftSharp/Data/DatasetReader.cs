using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Data;

/// <summary>
/// Reads training files. JSONL (.jsonl/.json), one object per line, in one of three shapes:
/// {"text": ...} (loss on all of it), {"prompt": ..., "completion": ...} (loss on the completion only; both strings, or
/// both message lists as TRL's conversational prompt-completion format, rendered by the chat template) or
/// {"messages": [{"role": ..., "content": ...}, ...]} (rendered by the model's chat template through a
/// <see cref="Chat.ChatPrompter"/>, or by <see cref="ChatFormat"/> when there is none).
/// Plain text (any other extension): paragraphs separated by blank lines, each one example.
/// Files are streamed through <see cref="TextLines"/>: UTF-8 only, one line (or paragraph) at most 8 MiB.
/// </summary>
internal static class DatasetReader
{
    public static IReadOnlyList<RawExample> Read(string path, Chat.ChatPrompter? chat = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: dataset file not found", path);
        string ext = Path.GetExtension(path).ToLowerInvariant();
        var examples = ext is ".jsonl" or ".json" ? ReadJsonl(path, chat ?? Chat.ChatPrompter.Simple) : ReadText(path);
        if (examples.Count == 0) throw new InvalidDataException($"{path}: the dataset is empty (no examples)");
        return examples;
    }

    static List<RawExample> ReadText(string path)
    {
        var result = new List<RawExample>();
        var paragraph = new List<string>();
        int start = 0, lineNo = 0;
        void Flush()
        {
            if (paragraph.Count > 0) result.Add(RawExample.Text(string.Join("\n", paragraph), $"{path}:{start}"));
            paragraph.Clear();
        }
        long paragraphChars = 0;
        foreach (var (n, line) in TextLines.Read(path))
        {
            lineNo = n;
            if (string.IsNullOrWhiteSpace(line)) { Flush(); paragraphChars = 0; continue; }
            if (paragraph.Count == 0) start = lineNo;
            // One paragraph is one example: bounded like a JSONL line.
            if ((paragraphChars += line.Length) > TextLines.MaxLineBytes)
                throw new InvalidDataException($"{path}:{start}: paragraph longer than {TextLines.MaxLineBytes:N0} characters (the limit for one example)");
            paragraph.Add(line);
        }
        Flush();
        return result;
    }

    static List<RawExample> ReadJsonl(string path, Chat.ChatPrompter chat)
    {
        var result = new List<RawExample>();
        foreach (var (lineNo, line) in TextLines.Read(path))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            string where = $"{path}:{lineNo}";
            JsonObject obj;
            try { obj = JsonNode.Parse(line) as JsonObject ?? throw new InvalidDataException($"{where}: expected a JSON object"); }
            catch (JsonException e) { throw new InvalidDataException($"{where}: malformed JSON ({e.Message})"); }
            result.Add(Parse(obj, where, chat));
        }
        return result;
    }

    static RawExample Parse(JsonObject obj, string where, Chat.ChatPrompter chat)
    {
        string Str(JsonNode? node, string field) => node is JsonValue v && v.TryGetValue<string>(out var s)
            ? s : throw new InvalidDataException($"{where}: field '{field}' must be a string");

        if (obj.ContainsKey("text")) return RawExample.Text(Str(obj["text"], "text"), where);
        // A preference file given to supervised training: name the methods that read it, not the missing 'completion'.
        if (obj.ContainsKey("chosen") || obj.ContainsKey("rejected"))
            throw new InvalidDataException($"{where}: a preference pair ('chosen'/'rejected') is data for the dpo or orpo method, not for supervised training");
        if (obj["prompt"] is JsonArray promptMessages && obj["completion"] is JsonArray completionMessages)
            return ConversationalPromptCompletion(promptMessages, completionMessages, where, chat);
        if (obj.ContainsKey("prompt") || obj.ContainsKey("completion"))
        {
            if (!obj.ContainsKey("prompt") || !obj.ContainsKey("completion"))
                throw new InvalidDataException($"{where}: a prompt/completion example needs both 'prompt' and 'completion'");
            return RawExample.PromptCompletion(Str(obj["prompt"], "prompt"), Str(obj["completion"], "completion"), where);
        }
        if (obj["messages"] is JsonArray messages)
        {
            var list = Chat.ChatMessages.FromJson(messages, where);
            if (!list.Any(m => m["role"]!.GetValue<string>() == "assistant"))
                throw new InvalidDataException($"{where}: 'messages' has no assistant message, so there is nothing to learn");
            return chat.ToExample(list, where);
        }
        throw new InvalidDataException($"{where}: expected {{\"text\"}}, {{\"prompt\",\"completion\"}} or {{\"messages\"}}, got keys [{string.Join(", ", obj.Select(p => p.Key))}]");
    }

    /// <summary>
    /// TRL's conversational prompt-completion example: "prompt" and "completion" are message lists. The conversation
    /// is rendered whole by the chat template, as "messages" is, and the loss is on the completion's assistant replies
    /// only (TRL's completion-only loss): an assistant turn inside the prompt is context.
    /// </summary>
    static RawExample ConversationalPromptCompletion(JsonArray prompt, JsonArray completion, string where, Chat.ChatPrompter chat)
    {
        static bool IsAssistant(JsonObject m) => m["role"]!.GetValue<string>() == "assistant";
        var before = Chat.ChatMessages.FromJson(prompt, where);
        var after = Chat.ChatMessages.FromJson(completion, where);
        if (!after.Any(IsAssistant))
            throw new InvalidDataException($"{where}: 'completion' has no assistant message, so there is nothing to learn");
        var ex = chat.ToExample([.. before, .. after], where);
        // Each assistant message is one trained segment, in order: the prompt's come first.
        int context = before.Count(IsAssistant);
        var segments = new List<TextSegment>(ex.Segments.Count);
        foreach (var seg in ex.Segments)
            segments.Add(seg.Trainable && context-- > 0 ? seg with { Trainable = false } : seg);
        return ex with { Segments = segments };
    }
}
