using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.Chat.Jinja;
using PeftSharp.IO;

namespace PeftSharp.Chat;

/// <summary>
/// A model's own chat template, rendered as transformers' <c>apply_chat_template(messages, tools=None,
/// add_generation_prompt=...)</c> renders it: the Jinja template with <c>messages</c>, <c>add_generation_prompt</c>,
/// <c>tools</c> and <c>documents</c> (None), and the tokenizer's special tokens (bos_token, eos_token, ...) as variables.
/// The template comes from tokenizer_config.json's <c>chat_template</c> (a string, or a list of {name, template}
/// where "default" is used) or from <c>chat_template.jinja</c> in the model folder, or from a file given with
/// <c>--chat-template</c>. Every failure (unparsable or unsupported template, a template that raises) is an
/// <see cref="InvalidDataException"/> naming the template's file and the cause.
/// </summary>
public sealed class ChatTemplate
{
    static readonly string[] SpecialTokenKeys = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

    readonly JinjaTemplate _template;

    /// <summary>Where the template came from (a file, or "file:chat_template"), for messages.</summary>
    public string Source { get; }
    /// <summary>The template's Jinja source text.</summary>
    public string Text { get; }
    /// <summary>Lower-case hex SHA-256 of the template's UTF-8 text: what an adapter records to detect a changed template.</summary>
    public string Sha256 { get; }
    /// <summary>bos_token, eos_token, ... as the template sees them.</summary>
    public IReadOnlyDictionary<string, string> SpecialTokens { get; }
    /// <summary>The instant strftime_now formats; the current local time when null.</summary>
    public DateTime? Now { get; init; }

    /// <summary>
    /// Parses <paramref name="text"/> (Jinja) with the tokenizer's <paramref name="specialTokens"/> (bos_token, ...);
    /// <paramref name="source"/> names it in messages. Throws <see cref="InvalidDataException"/> naming the source when
    /// the template cannot be parsed or uses a construct this interpreter does not implement.
    /// </summary>
    public ChatTemplate(string text, IReadOnlyDictionary<string, string> specialTokens, string source)
    {
        Source = source;
        Text = text;
        SpecialTokens = specialTokens;
        Sha256 = HashOf(text);
        try { _template = JinjaTemplate.Parse(text); }
        catch (JinjaException e) { throw new InvalidDataException($"{source}: chat template cannot be used: {e.Message}"); }
    }

    /// <summary>Lower-case hex SHA-256 of <paramref name="text"/>'s UTF-8 bytes (see <see cref="Sha256"/>).</summary>
    public static string HashOf(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    /// <summary>
    /// The template of a model folder: <paramref name="overrideFile"/> when given (a Jinja file, with the folder's
    /// special tokens), else the folder's own (chat_template.jinja, then tokenizer_config.json's chat_template, transformers' order); null when it has none.
    /// </summary>
    public static ChatTemplate? Load(string modelDir, string? overrideFile = null)
    {
        var (config, configPath, special) = FolderTokens(modelDir);
        if (overrideFile is not null)
        {
            if (!File.Exists(overrideFile)) throw new InvalidDataException($"{overrideFile}: chat template file not found");
            return new ChatTemplate(Data.TextLines.ReadAll(overrideFile), special, overrideFile);
        }
        // chat_template.jinja before the config's field, as transformers' from_pretrained reads them ("If independent
        // chat template file(s) exist, they take priority over template entries in the tokenizer config"): a folder
        // holding two different templates rendered the config's, which the model's own tokenizer never uses.
        string jinja = Path.Combine(modelDir, "chat_template.jinja");
        if (File.Exists(jinja)) return new ChatTemplate(Data.TextLines.ReadAll(jinja), special, jinja);
        return config?["chat_template"] is JsonNode node ? new ChatTemplate(TemplateText(node, configPath), special, $"{configPath}:chat_template") : null;
    }

    /// <summary>
    /// <paramref name="text"/> as the template of <paramref name="modelDir"/>'s tokenizer (its special tokens): what an
    /// adapter trained with --chat-template recorded, carried by an export of the base with it merged.
    /// </summary>
    internal static ChatTemplate FromText(string modelDir, string text, string source) => new(text, FolderTokens(modelDir).Special, source);

    static (JsonObject? Config, string ConfigPath, IReadOnlyDictionary<string, string> Special) FolderTokens(string modelDir)
    {
        string configPath = Path.Combine(modelDir, "tokenizer_config.json");
        JsonObject? config = File.Exists(configPath) ? JsonFile.ReadObject(configPath) : null;
        return (config, configPath, config is null ? new Dictionary<string, string>() : SpecialTokensOf(config, configPath));
    }

    static string TemplateText(JsonNode node, string configPath)
    {
        if (node is JsonValue v && v.TryGetValue<string>(out var s)) return s;
        if (node is JsonArray list)
        {
            foreach (var item in list)
                if (item is JsonObject o && o["name"] is JsonValue n && n.TryGetValue<string>(out var name) && name == "default")
                    return o["template"] is JsonValue t && t.TryGetValue<string>(out var text) ? text
                        : throw new InvalidDataException($"{configPath}: chat_template 'default' has no string 'template'");
            throw new InvalidDataException($"{configPath}: chat_template is a list of named templates without one named 'default'");
        }
        throw new InvalidDataException($"{configPath}: chat_template must be a string or a list of {{name, template}}");
    }

    /// <summary>bos_token, eos_token, ... of tokenizer_config.json: a string, or an AddedToken object with "content".</summary>
    static Dictionary<string, string> SpecialTokensOf(JsonObject config, string configPath)
    {
        var result = new Dictionary<string, string>();
        foreach (var key in SpecialTokenKeys)
        {
            switch (config[key])
            {
                case null: break;
                case JsonValue v when v.TryGetValue<string>(out var s): result[key] = s; break;
                case JsonObject o when o["content"] is JsonValue c && c.TryGetValue<string>(out var content): result[key] = content; break;
                default: throw new InvalidDataException($"{configPath}: '{key}' must be a string or an object with a string 'content'");
            }
        }
        return result;
    }

    /// <summary>
    /// The template's text for <paramref name="messages"/> (each a JSON object with at least "role" and "content";
    /// other fields are passed through). A template that raises (raise_exception) or fails is a
    /// <see cref="InvalidDataException"/> naming <see cref="Source"/> and the template's message.
    /// </summary>
    public string Render(IReadOnlyList<JsonObject> messages, bool addGenerationPrompt)
    {
        var variables = new Dictionary<string, object?>
        {
            ["messages"] = messages.Select(m => Values.FromJson(m)).ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
            ["tools"] = null,
            ["documents"] = null,
        };
        foreach (var (k, v) in SpecialTokens) variables[k] = v;
        try { return _template.Render(variables, Now); }
        catch (JinjaRaisedException e) { throw new InvalidDataException($"{Source}: the chat template refused the conversation: {e.Message}"); }
        catch (JinjaException e) { throw new InvalidDataException($"{Source}: chat template failed: {e.Message}"); }
    }

    /// <summary><see cref="Render(IReadOnlyList{JsonObject}, bool)"/> for plain (role, content) pairs.</summary>
    public string Render(IEnumerable<(string Role, string Content)> messages, bool addGenerationPrompt) =>
        Render(messages.Select(m => new JsonObject { ["role"] = m.Role, ["content"] = m.Content }).ToList(), addGenerationPrompt);
}
