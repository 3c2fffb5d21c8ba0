using System.ComponentModel;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Chat;
using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Models;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft tokenize: what the model sees. --text: the ids Hugging Face's tokenizer gives by default (special tokens
/// added, as tokenizer(text)); --chat: the conversation rendered with the model's chat template and its ids (as
/// apply_chat_template(tokenize=True): the template writes the special tokens, none are added); --data: the training
/// sequences `train` builds from a data file (ids and labels, -100 where no loss is taken), through the same loader.
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

        [CommandOption("--data <FILE>")]
        [Description("A training data file (as train --data): print each sequence train would learn from, its ids and labels (-100: no loss)")]
        public string? Data { get; set; }

        [CommandOption("--max-seq <N>")]
        [Description("With --data: the maximum sequence length, as train --max-seq")]
        [DefaultValue(256)]
        public int MaxSeq { get; set; } = 256;

        [CommandOption("--packing")]
        [Description("With --data: pack examples as train --packing does")]
        public bool Packing { get; set; }

        [CommandOption("--add-generation-prompt")]
        [Description("With --chat: end with the assistant header, as a prompt for generation")]
        public bool AddGenerationPrompt { get; set; }

        [CommandOption("--chat-template <FILE>")]
        [Description(ChatCli.TemplateOptionHelp)]
        public string? ChatTemplate { get; set; }

        [CommandOption("--json")]
        [Description("Print one JSON object: {\"text\" (with --chat), \"ids\", \"tokens\"}; with --data one per sequence: {\"ids\", \"labels\", \"tokens\"}")]
        public bool Json { get; set; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Model)) return ValidationResult.Error("--model is required");
            if (new[] { Text, Chat, Data }.Count(x => x is not null) != 1) return ValidationResult.Error("give one of --text TEXT, --chat FILE or --data FILE");
            if (MaxSeq < 2) return ValidationResult.Error($"--max-seq {MaxSeq} must be at least 2");
            if ((Packing || MaxSeq != 256) && Data is null) return ValidationResult.Error("--max-seq and --packing need --data");
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
        if (s.Data is not null) return PrintTrainingSequences(s, tokenizer);
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

    /// <summary>
    /// --data: the training sequences exactly as `train` builds them (TrainingData.Load: the same reader, chat template,
    /// truncation and packing), so a user can see which tokens carry the loss.
    /// </summary>
    static int PrintTrainingSequences(Settings s, TextTokenizer tokenizer)
    {
        var data = TrainingData.Load(s.Data!, tokenizer, s.MaxSeq, s.Packing, chat: ChatCli.Prompter(s.Model, s.ChatTemplate));
        var names = TokenNames(tokenizer.Path);
        var escaped = new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        foreach (var (seq, n) in data.Train.Select((q, i) => (q, i + 1)))
        {
            var tokens = seq.Ids.Select(i => names.TryGetValue(i, out var t) ? t : $"<id {i}>").ToList();
            if (s.Json)
            {
                Console.WriteLine(new JsonObject
                {
                    ["ids"] = new JsonArray(seq.Ids.Select(i => (JsonNode)i).ToArray()),
                    ["labels"] = new JsonArray(seq.Labels.Select(i => (JsonNode)i).ToArray()),
                    ["tokens"] = new JsonArray(tokens.Select(t => (JsonNode)t).ToArray()),
                }.ToJsonString(escaped));
                continue;
            }
            Console.WriteLine($"sequence {n} ({seq.Length} tokens, {seq.LossTokens} with loss):");
            Console.WriteLine($"  ids: [{string.Join(", ", seq.Ids)}]");
            Console.WriteLine($"  labels: [{string.Join(", ", seq.Labels)}]");
            // Learned tokens in [[ ]]: what the loss is taken on, at a glance.
            Console.WriteLine($"  tokens: {string.Concat(tokens.Select((t, i) => seq.Labels[i] == TokenSequence.Ignore ? JsonSerializer.Serialize(t, escaped) + " " : "[[" + JsonSerializer.Serialize(t, escaped) + "]] "))}".TrimEnd());
        }
        Console.Error.WriteLine(data.TrainStats);
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
