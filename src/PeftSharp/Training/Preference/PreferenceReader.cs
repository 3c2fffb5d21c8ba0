using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Data;

namespace PeftSharp.Training.Preference;

/// <summary>
/// Reads preference JSONL, one pair per line, in TRL's two shapes:
/// standard <c>{"prompt": str, "chosen": str, "rejected": str}</c> (loss on the response and EOS), or conversational
/// <c>{"chosen": [messages], "rejected": [messages]}</c> whose lists share the prompt as a common prefix (TRL's implicit
/// prompt), optionally with an explicit <c>"prompt": [messages]</c> (then chosen/rejected hold only the responses).
/// Every problem fails with <c>file:line: cause</c>: malformed JSON, missing fields, an empty response, chosen equal to
/// rejected, conversational lists without a shared prompt.
/// </summary>
internal static class PreferenceReader
{
    /// <summary>True when the first non-blank line of a .jsonl file looks like a preference pair (has "chosen" and "rejected").</summary>
    public static bool IsPreferenceFile(string path)
    {
        if (!File.Exists(path) || Path.GetExtension(path).ToLowerInvariant() is not (".jsonl" or ".json")) return false;
        var first = File.ReadLines(path).FirstOrDefault(l => !string.IsNullOrWhiteSpace(l));
        try { return first is not null && JsonNode.Parse(first) is JsonObject o && o.ContainsKey("chosen") && o.ContainsKey("rejected"); }
        catch (JsonException) { return false; }
    }

    /// <paramref name="chat"/> renders conversational pairs (the model's chat template; the simple format, silently, when null).
    public static IReadOnlyList<PreferencePair> Read(string path, Chat.ChatPrompter? chat = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: preference file not found", path);
        var result = new List<PreferencePair>();
        int lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            string where = $"{path}:{lineNo}";
            JsonObject obj;
            try { obj = JsonNode.Parse(line) as JsonObject ?? throw new InvalidDataException($"{where}: expected a JSON object"); }
            catch (JsonException e) { throw new InvalidDataException($"{where}: malformed JSON ({e.Message})"); }
            result.Add(Parse(obj, where, chat));
        }
        if (result.Count == 0) throw new InvalidDataException($"{path}: the preference file is empty (no pairs)");
        return result;
    }

    public static PreferencePair Parse(JsonObject obj, string where, Chat.ChatPrompter? chat = null)
    {
        if (!obj.ContainsKey("chosen") || !obj.ContainsKey("rejected"))
            throw new InvalidDataException($"{where}: a preference pair needs 'chosen' and 'rejected' (got keys [{string.Join(", ", obj.Select(p => p.Key))}])");
        var pair = obj["chosen"] is JsonArray ? Conversational(obj, where, chat ?? Chat.ChatPrompter.Simple) : Standard(obj, where);
        string Text(IEnumerable<TextSegment> s) => string.Concat(s.Select(x => x.Text));
        if (Text(pair.Chosen) == Text(pair.Rejected))
            throw new InvalidDataException($"{where}: 'chosen' and 'rejected' are the same response, so the pair prefers nothing");
        return pair;
    }

    static PreferencePair Standard(JsonObject obj, string where)
    {
        string prompt = Str(obj["prompt"], "prompt", where), chosen = Str(obj["chosen"], "chosen", where), rejected = Str(obj["rejected"], "rejected", where);
        if (string.IsNullOrWhiteSpace(chosen)) throw new InvalidDataException($"{where}: 'chosen' is an empty response");
        if (string.IsNullOrWhiteSpace(rejected)) throw new InvalidDataException($"{where}: 'rejected' is an empty response");
        return new PreferencePair([new TextSegment(prompt, false)], [new TextSegment(chosen, true)], [new TextSegment(rejected, true)], where);
    }

    static PreferencePair Conversational(JsonObject obj, string where, Chat.ChatPrompter chat)
    {
        var chosen = Messages(obj["chosen"], "chosen", where);
        var rejected = Messages(obj["rejected"], "rejected", where);
        List<(string Role, string Content)> prompt;
        if (obj["prompt"] is { } explicitPrompt)
            prompt = Messages(explicitPrompt, "prompt", where);
        else
        {
            // TRL's implicit prompt: the longest common prefix of the two conversations.
            int n = 0;
            while (n < chosen.Count && n < rejected.Count && chosen[n] == rejected[n]) n++;
            if (n == 0) throw new InvalidDataException($"{where}: 'chosen' and 'rejected' do not share a prompt prefix (their first messages differ); give the same prompt messages first, or an explicit 'prompt'");
            prompt = chosen.Take(n).ToList();
            chosen = chosen.Skip(n).ToList();
            rejected = rejected.Skip(n).ToList();
        }
        foreach (var (side, msgs) in new[] { ("chosen", chosen), ("rejected", rejected) })
        {
            if (msgs.Count == 0 || msgs.All(m => string.IsNullOrWhiteSpace(m.Content)))
                throw new InvalidDataException($"{where}: '{side}' has an empty response after the shared prompt");
            if (!msgs.Any(m => m.Role == "assistant")) throw new InvalidDataException($"{where}: '{side}' response has no assistant message, so there is nothing to learn");
        }
        var (promptSegs, chosenSegs, rendered) = PreferenceRendering.Conversation(prompt, chosen, chat, where);
        var (_, rejectedSegs, _) = PreferenceRendering.Conversation(prompt, rejected, chat, where);
        return new PreferencePair(promptSegs, chosenSegs, rejectedSegs, where) { Rendered = rendered };
    }

    static List<(string Role, string Content)> Messages(JsonNode? node, string field, string where)
    {
        if (node is not JsonArray arr) throw new InvalidDataException($"{where}: '{field}' must be a list of messages like the other side");
        var list = new List<(string, string)>();
        foreach (var m in arr)
        {
            if (m is not JsonObject mo) throw new InvalidDataException($"{where}: each message of '{field}' must be an object with 'role' and 'content'");
            list.Add((Str(mo["role"], "role", where), Str(mo["content"], "content", where)));
        }
        return list;
    }

    static string Str(JsonNode? node, string field, string where) => node is JsonValue v && v.TryGetValue<string>(out var s)
        ? s : throw new InvalidDataException($"{where}: field '{field}' must be a string");
}
