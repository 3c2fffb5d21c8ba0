using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.Models;

namespace PeftSharp.Chat;

/// <summary>
/// How conversations become text everywhere chat appears (training/eval data, serve's /v1/chat/completions,
/// generate --chat, tokenize --chat): the model's own <see cref="ChatTemplate"/> when it has one, else PeftSharp's
/// simple <see cref="ChatFormat"/>, with a one-line note (once) that the simple format is in use.
/// </summary>
public sealed class ChatPrompter
{
    readonly Action<string>? _note;
    readonly Lazy<ChatTemplate?> _template;
    int _noted;

    /// <summary>
    /// The template, loaded on first use: a command that never renders chat (training on plain text) does not fail on
    /// a template it cannot use. Loading errors are <see cref="InvalidDataException"/>s naming the file.
    /// </summary>
    public ChatTemplate? Template => _template.Value;
    /// <summary>True once a training/eval example was rendered (the adapter then records the rendering).</summary>
    internal bool Used { get; private set; }
    /// <summary>Where notes name the model (its folder).</summary>
    public string ModelName { get; }

    /// <summary>
    /// A prompter over <paramref name="template"/> (null: the simple format); <paramref name="note"/> gets the one-line
    /// note that the simple format is in use, naming <paramref name="modelName"/>.
    /// </summary>
    public ChatPrompter(ChatTemplate? template, string modelName = "the model", Action<string>? note = null)
        : this(() => template, modelName, note) { }

    ChatPrompter(Func<ChatTemplate?> load, string modelName, Action<string>? note)
    {
        _template = new Lazy<ChatTemplate?>(load);
        ModelName = modelName;
        _note = note;
    }

    /// <summary>The simple format, silently (callers that have no model folder).</summary>
    public static ChatPrompter Simple { get; } = new(null);

    /// <summary>The model folder's template, or <paramref name="overrideFile"/> (--chat-template) when given.</summary>
    public static ChatPrompter ForModel(string modelDir, string? overrideFile = null, Action<string>? note = null) =>
        new(() => ChatTemplate.Load(modelDir, overrideFile), modelDir, note);

    /// <summary>The conversation's text; with <paramref name="addGenerationPrompt"/>, followed by the assistant header.</summary>
    public string Render(IReadOnlyList<JsonObject> messages, bool addGenerationPrompt)
    {
        if (Template is not null) return Template.Render(messages, addGenerationPrompt);
        NoteSimple();
        return ChatFormat.Render(messages.Select(ChatMessages.Pair), addGenerationPrompt);
    }

    /// <summary>The prompt for generation: the conversation and the template's generation prompt (the assistant header).</summary>
    public string RenderPrompt(IReadOnlyList<JsonObject> messages) => Render(messages, addGenerationPrompt: true);

    /// <inheritdoc cref="RenderPrompt(IReadOnlyList{JsonObject})"/>
    public string RenderPrompt(IEnumerable<(string Role, string Content)> messages) =>
        RenderPrompt(messages.Select(m => new JsonObject { ["role"] = m.Role, ["content"] = m.Content }).ToList());

    /// <summary>
    /// A training example: with a template, the whole rendered conversation, the loss on each assistant reply and
    /// its end-of-turn marker (see <see cref="ChatMasking"/>); without one, the simple format.
    /// </summary>
    internal RawExample ToExample(IReadOnlyList<JsonObject> messages, string where)
    {
        Used = true;
        if (Template is not null) return new RawExample(ChatMasking.Segments(Template, messages, where), where) { Rendered = true };
        NoteSimple();
        return new RawExample(ChatFormat.Render(messages.Select(ChatMessages.Pair).ToList()), where);
    }

    /// <summary>
    /// The ids that end an assistant turn in this template (e.g. &lt;|im_end|&gt;, &lt;|eot_id|&gt;): the special tokens
    /// that close a rendered assistant reply. Generation stops on them as on EOS. Empty for the simple format.
    /// The reply probed is the first of two turns: what a template writes after the whole conversation (Phi-3's
    /// &lt;|endoftext|&gt; after the last &lt;|end|&gt;) does not end a turn. A template that refuses two turns is
    /// probed with one.
    /// </summary>
    public IReadOnlyList<int> EndOfTurnIds(TextTokenizer tokenizer)
    {
        if (Template is null) return [];
        static JsonObject Turn(string role, string content) => new() { ["role"] = role, ["content"] = content };
        var special = tokenizer.SpecialTokens.Values.ToHashSet();
        List<int> ClosingIds(List<JsonObject> probe)
        {
            var reply = ChatMasking.Segments(Template, probe, Template.Source).First(s => s.Trainable).Text;
            return tokenizer.Encode(reply).Reverse().TakeWhile(special.Contains).Reverse().Distinct().ToList();
        }
        try { if (ClosingIds([Turn("user", "Hi"), Turn("assistant", "Hello"), Turn("user", "Hi"), Turn("assistant", "Hello")]) is { Count: > 0 } ids) return ids; }
        catch (InvalidDataException) { }
        try { return ClosingIds([Turn("user", "Hi"), Turn("assistant", "Hello")]); }
        catch (InvalidDataException) { return []; } // a template that refuses the probe simply has no known end-of-turn ids
    }

    /// <summary>
    /// For a renderer of training data other than <see cref="ToExample"/> (preference pairs): marks the prompter used
    /// (the adapter records the rendering) and returns the template, or null after the simple-format note.
    /// </summary>
    internal ChatTemplate? UseForTraining()
    {
        Used = true;
        if (Template is null) NoteSimple();
        return Template;
    }

    void NoteSimple()
    {
        if (Interlocked.Exchange(ref _noted, 1) == 0)
            _note?.Invoke($"{ModelName} has no chat template (tokenizer_config.json chat_template or chat_template.jinja); using PeftSharp's simple chat format <|role|>\\n{{content}}");
    }
}
