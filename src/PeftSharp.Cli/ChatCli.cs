using PeftSharp.Chat;
using PeftSharp.Models;

namespace PeftSharp.Cli;

/// <summary>Chat rendering for the commands: the model's template (or --chat-template), notes, and adapter checks.</summary>
public static class ChatCli
{
    public const string TemplateOptionHelp = "Jinja chat template to render conversations with, instead of the model's own (tokenizer_config.json chat_template or chat_template.jinja)";

    /// <summary>The prompter of a model folder; the simple-format note goes to stderr.</summary>
    public static ChatPrompter Prompter(string modelDir, string? templateFile) =>
        ChatPrompter.ForModel(modelDir, templateFile, note: m => Console.Error.WriteLine($"note: {m}"));

    /// <summary>generate --chat FILE: the rendered prompt (with the generation prompt) and the ids that end the assistant's turn.</summary>
    public static (string Prompt, IReadOnlyList<int> EndOfTurnIds) ChatPrompt(ChatPrompter chat, string chatFile, TextTokenizer tokenizer) =>
        (chat.RenderPrompt(ChatMessages.ReadFile(chatFile)), chat.EndOfTurnIds(tokenizer));

    /// <summary>
    /// Warns (stderr) for each adapter folder whose chat rendering (<see cref="AdapterChatRecord.Trained"/>: its record or
    /// a template saved in the folder) differs from the base's now.
    /// </summary>
    public static void WarnOnTemplateMismatch(ChatPrompter chat, IEnumerable<string> adapterDirs)
    {
        foreach (var dir in adapterDirs)
            if (AdapterChatRecord.Trained(dir)?.Mismatch(chat, dir) is { } warning) Console.Error.WriteLine($"warning: {warning}");
    }

    /// <summary>
    /// eval: the same check once the data is read, when it held conversations (so was rendered with <paramref name="chat"/>).
    /// </summary>
    public static void WarnOnTemplateMismatchIfUsed(ChatPrompter chat, IReadOnlyList<string> adapterSpecs)
    {
        if (chat.Used) WarnOnTemplateMismatch(chat, AdapterCli.Parse(adapterSpecs).Select(a => a.Dir));
    }

    /// <summary>
    /// The same check for commands that may not render chat at all (generate --prompt, merge): the base's template is
    /// loaded only when an adapter records one, and a template that cannot be loaded is a warning here, not an error.
    /// </summary>
    public static void WarnOnTemplateMismatch(string modelDir, string? templateFile, IEnumerable<string> adapterDirs)
    {
        var recorded = adapterDirs.Where(d => AdapterChatRecord.Trained(d) is not null).ToList();
        if (recorded.Count == 0) return;
        ChatPrompter chat;
        try { chat = ChatPrompter.ForModel(modelDir, templateFile); }
        catch (InvalidDataException e) { Console.Error.WriteLine($"warning: cannot compare the adapters' chat template with the base's: {e.Message}"); return; }
        WarnOnTemplateMismatch(chat, recorded);
    }

    /// <summary>After training on chat data: record the rendering and stop ids in the adapter folder.</summary>
    public static void Record(string adapterDir, ChatPrompter chat, TextTokenizer tokenizer, ModelConfig config)
    {
        if (chat.Used) AdapterChatRecord.Of(chat, tokenizer.StopIds(config).Concat(chat.EndOfTurnIds(tokenizer))).Write(adapterDir);
    }
}
