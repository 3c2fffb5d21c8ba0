using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.IO;

namespace PeftSharp.Chat;

/// <summary>
/// What an adapter folder records about the chat rendering it was trained with (<see cref="SidecarKey"/> of the
/// folder's <see cref="AdapterFolderFiles.SidecarFile"/>; folders saved before it have <see cref="LegacyFileName"/>):
/// the template's SHA-256 (null for PeftSharp's simple format), where it came from, and the
/// ids that ended generation (EOS and the template's end-of-turn tokens). serve, generate and merge warn when the
/// base they run on renders chat differently. <see cref="TemplateText"/> is the template itself, so merge can give a
/// merged model the template it was trained with when that was not the base's (--chat-template).
/// </summary>
internal sealed record AdapterChatRecord(string? TemplateSha256, string TemplateSource, IReadOnlyList<int> StopIds)
{
    /// <summary>The record's key in the adapter folder's sidecar, beside its base fingerprint.</summary>
    public const string SidecarKey = "chat";

    /// <summary>Where folders saved before the sidecar kept the record: a file of its own. Read, never written.</summary>
    public const string LegacyFileName = "peftsharp_chat.json";

    /// <summary>The template's text (null for the simple format, and in records written before it was kept).</summary>
    public string? TemplateText { get; init; }

    public static AdapterChatRecord Of(ChatPrompter chat, IEnumerable<int> stopIds) =>
        new(chat.Template?.Sha256, chat.Template?.Source ?? "PeftSharp's simple chat format", stopIds.Distinct().Order().ToList())
        { TemplateText = chat.Template?.Text };

    /// <summary>Writes the record into a saved adapter folder's sidecar (atomically), replacing a record of the older layout.</summary>
    public void Write(string adapterDir)
    {
        var json = new JsonObject
        {
            ["chat_template_sha256"] = TemplateSha256,
            ["chat_template_source"] = TemplateSource,
            ["stop_token_ids"] = new JsonArray(StopIds.Select(i => (JsonNode)i).ToArray()),
            ["chat_template"] = TemplateText,
        };
        AdapterFolderWriter.AddToSidecar(adapterDir, SidecarKey, json);
        File.Delete(Path.Combine(adapterDir, LegacyFileName));   // no second record left to disagree with this one
    }

    /// <summary>
    /// Where <see cref="TemplateText"/> was read, for messages and for the source an export gives it
    /// ("DIR/peftsharp_adapter.json:chat.chat_template (SOURCE)", or "DIR/tokenizer_config.json:chat_template").
    /// </summary>
    public string? TextSource { get; init; }

    /// <summary>
    /// The chat rendering an adapter folder carries, whichever way it carries it: PeftSharp's record (written by
    /// `peft train` on chat data), else a template saved beside the adapter as transformers' save_pretrained leaves it
    /// (tokenizer_config.json's chat_template or chat_template.jinja, read as <see cref="ChatTemplate.Load"/> reads a
    /// model folder): PEFT/TRL scripts save the tokenizer with the adapter, and TRL's setup_chat_format gives a base
    /// model a template only that folder holds. Null when the folder names none. Every check that compares an
    /// adapter's template with the base's (generate, serve, merge, eval, export) and every export that carries it
    /// reads it here, so no way of carrying one is missed by some of them.
    /// </summary>
    public static AdapterChatRecord? Trained(string adapterDir)
    {
        if (Read(adapterDir) is { } record) return record;
        return ChatTemplate.Load(adapterDir) is { } saved
            ? new AdapterChatRecord(saved.Sha256, saved.Source, []) { TemplateText = saved.Text, TextSource = saved.Source }
            : null;
    }

    /// <summary>
    /// The folder's record: the sidecar's, else (folders saved before it) <see cref="LegacyFileName"/>'s; null when it
    /// has none (adapters from PEFT, or not trained on chat data).
    /// </summary>
    public static AdapterChatRecord? Read(string adapterDir)
    {
        string sidecar = Path.Combine(adapterDir, AdapterFolderFiles.SidecarFile), legacy = Path.Combine(adapterDir, LegacyFileName);
        string path;
        JsonObject o;
        switch (AdapterFolderFiles.ReadSidecar(adapterDir)?[SidecarKey])
        {
            case JsonObject inSidecar: (path, o) = ($"{sidecar}:{SidecarKey}", inSidecar); break;
            case { } other: throw new InvalidDataException($"{sidecar}: '{SidecarKey}' must be an object, got {other.GetValueKind().ToString().ToLowerInvariant()}");
            default:
                if (!File.Exists(legacy)) return null;
                (path, o) = (legacy, JsonFile.ReadObject(legacy));
                break;
        }
        try
        {
            return new AdapterChatRecord(o["chat_template_sha256"]?.GetValue<string>(), o["chat_template_source"]?.GetValue<string>() ?? "?",
                (o["stop_token_ids"] as JsonArray ?? []).Select(x => x!.GetValue<int>()).ToList())
            { TemplateText = o["chat_template"]?.GetValue<string>(), TextSource = $"{path}{(path == legacy ? ":" : ".")}chat_template ({o["chat_template_source"]?.GetValue<string>() ?? "?"})" };
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
