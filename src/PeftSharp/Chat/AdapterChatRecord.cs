using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.IO;

namespace PeftSharp.Chat;

/// <summary>
/// What an adapter folder records about the chat rendering it was trained with (<see cref="FileName"/>, beside
/// adapter_config.json): the template's SHA-256 (null for PeftSharp's simple format), where it came from, and the
/// ids that ended generation (EOS and the template's end-of-turn tokens). serve, generate and merge warn when the
/// base they run on renders chat differently. <see cref="TemplateText"/> is the template itself, so merge can give a
/// merged model the template it was trained with when that was not the base's (--chat-template).
/// </summary>
internal sealed record AdapterChatRecord(string? TemplateSha256, string TemplateSource, IReadOnlyList<int> StopIds)
{
    public const string FileName = "peftsharp_chat.json";

    /// <summary>The template's text (null for the simple format, and in records written before it was kept).</summary>
    public string? TemplateText { get; init; }

    public static AdapterChatRecord Of(ChatPrompter chat, IEnumerable<int> stopIds) =>
        new(chat.Template?.Sha256, chat.Template?.Source ?? "PeftSharp's simple chat format", stopIds.Distinct().Order().ToList())
        { TemplateText = chat.Template?.Text };

    /// <summary>Writes the record into an adapter folder (atomically; the folder exists).</summary>
    public void Write(string adapterDir)
    {
        var json = new JsonObject
        {
            ["chat_template_sha256"] = TemplateSha256,
            ["chat_template_source"] = TemplateSource,
            ["stop_token_ids"] = new JsonArray(StopIds.Select(i => (JsonNode)i).ToArray()),
            ["chat_template"] = TemplateText,
        };
        AtomicFile.WriteAllText(Path.Combine(adapterDir, FileName), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>The folder's record, or null when it has none (adapters from PEFT or from before records existed).</summary>
    public static AdapterChatRecord? Read(string adapterDir)
    {
        string path = Path.Combine(adapterDir, FileName);
        if (!File.Exists(path)) return null;
        var o = JsonFile.ReadObject(path);
        try
        {
            return new AdapterChatRecord(o["chat_template_sha256"]?.GetValue<string>(), o["chat_template_source"]?.GetValue<string>() ?? "?",
                (o["stop_token_ids"] as JsonArray ?? []).Select(x => x!.GetValue<int>()).ToList())
            { TemplateText = o["chat_template"]?.GetValue<string>() };
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{path}: malformed chat record ({e.Message})");
        }
    }

    /// <summary>A warning when <paramref name="chat"/> (the base's rendering now) differs from what the adapter was trained with; null when they agree.</summary>
    public string? Mismatch(ChatPrompter chat, string adapterDir)
    {
        string? now = chat.Template?.Sha256;
        if (now == TemplateSha256) return null;
        string Describe(string? sha, string source) => sha is null ? "PeftSharp's simple chat format" : $"chat template {source} (sha256 {sha[..12]})";
        return $"{adapterDir} was trained with {Describe(TemplateSha256, TemplateSource)} but chat is now rendered with " +
               $"{Describe(now, chat.Template?.Source ?? "")}; its replies may not follow the format it learned (--chat-template FILE renders with another template)";
    }
}
