using System.ComponentModel;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Chat;
using PeftSharp.IO;
using PeftSharp.Models;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft tokenize: what the model sees. --text: the ids Hugging Face's tokenizer gives by default (special tokens
/// added, as tokenizer(text)); --chat: the conversation rendered with the model's chat template and its ids (as
/// apply_chat_template(tokenize=True): the template writes the special tokens, none are added).
/// </summary>
public sealed class TokenizeCommand : Command<TokenizeCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--model <DIR>")]
        [Description("Model folder (tokenizer.json; tokenizer_config.json for the chat template)")]
        public string Model { get; set; } = "";

        [CommandOption("--text <TEXT>")]
        [Description("Text to tokenize, with the tokenizer's default special tokens")]
        public string? Text { get; set; }

        [CommandOption("--chat <FILE>")]
        [Description("A conversation (JSON: [[{\"role\",\"content\"}, ...]] or {\"messages\": [[...]]}) to render and tokenize")]
        public string? Chat { get; set; }

        [CommandOption("--add-generation-prompt")]
        [Description("With --chat: end with the assistant header, as a prompt for generation")]
        public bool AddGenerationPrompt { get; set; }

        [CommandOption("--chat-template <FILE>")]
        [Description(ChatCli.TemplateOptionHelp)]
        public string? ChatTemplate { get; set; }

        [CommandOption("--json")]
        [Description("Print one JSON object: {\"text\" (with --chat), \"ids\", \"tokens\"}")]
        public bool Json { get; set; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Model)) return ValidationResult.Error("--model is required");
            if ((Text is null) == (Chat is null)) return ValidationResult.Error("give one of --text TEXT or --chat FILE");
            if (AddGenerationPrompt && Chat is null) return ValidationResult.Error("--add-generation-prompt needs --chat");
            // Last, so a bad flag is reported before anything is downloaded: a folder, a GGUF file or a repo id, as every command takes it.
            var resolved = HubCli.TryResolve(Model, "--model", out var folder);
            Model = folder;
            return resolved;
        }
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        using var tokenizer = TextTokenizer.Load(s.Model);
        string? rendered = s.Chat is null ? null : ChatCli.Prompter(s.Model, s.ChatTemplate).Render(ChatMessages.ReadFile(s.Chat), s.AddGenerationPrompt);
        int[] ids = rendered is null ? tokenizer.Encode(s.Text!, addSpecialTokens: true) : tokenizer.Encode(rendered, addSpecialTokens: false);
        var names = TokenNames(tokenizer.Path);
        var tokens = ids.Select(i => names.TryGetValue(i, out var t) ? t : $"<id {i}>").ToList();
        if (s.Json)
        {
            var json = new JsonObject();
            if (rendered is not null) json["text"] = rendered;
            json["ids"] = new JsonArray(ids.Select(i => (JsonNode)i).ToArray());
            json["tokens"] = new JsonArray(tokens.Select(t => (JsonNode)t).ToArray());
            Console.WriteLine(json.ToJsonString(new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
            return 0;
        }
        if (rendered is not null) Console.WriteLine($"text: {JsonSerializer.Serialize(rendered, new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping })}");
        Console.WriteLine($"ids ({ids.Length}): [{string.Join(", ", ids)}]");
        Console.WriteLine($"tokens: [{string.Join(", ", tokens.Select(t => JsonSerializer.Serialize(t, new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping })))}]");
        return 0;
    }

    /// <summary>id → token string from tokenizer.json: the model's vocab (a token→id map, or Unigram's [piece, score] list) and the added tokens.</summary>
    static Dictionary<int, string> TokenNames(string tokenizerJson)
    {
        var root = JsonFile.ReadObject(tokenizerJson);
        var names = new Dictionary<int, string>();
        if (root["model"]?["vocab"] is JsonObject vocab)
            foreach (var (token, id) in vocab)
                if (id is JsonValue v && v.TryGetValue<int>(out int i)) names[i] = token;
        if (root["model"]?["vocab"] is JsonArray pieces)
            for (int i = 0; i < pieces.Count; i++)
                if (pieces[i] is JsonArray p && p.Count > 0 && p[0] is JsonValue piece && piece.TryGetValue<string>(out var t)) names[i] = t;
        foreach (var added in (root["added_tokens"] as JsonArray ?? []).OfType<JsonObject>())
            if (added["id"] is JsonValue idv && idv.TryGetValue<int>(out int id) && added["content"] is JsonValue c && c.TryGetValue<string>(out var content))
                names[id] = content;
        return names;
    }
}
