using PeftSharp.Models;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// What `generate` feeds the model: --prompt as given, or --chat FILE (a messages JSON) rendered with the model's
/// chat template (or --chat-template) and its generation prompt; then generation also stops on the template's
/// end-of-turn tokens. Adapters whose recorded chat template differs from the base's get a warning.
/// </summary>
public static class GenerateInput
{
    public static (string Text, IReadOnlySet<int> StopIds) Resolve(string? prompt, string? chatFile, string? templateFile, string modelDir,
        TextTokenizer tokenizer, ModelConfig config, IReadOnlyList<string> adapterSpecs)
    {
        var stop = tokenizer.StopIds(config).ToHashSet();
        var adapterDirs = AdapterCli.Parse(adapterSpecs).Select(a => a.Dir).ToList();
        if (chatFile is null)
        {
            ChatCli.WarnOnTemplateMismatch(modelDir, templateFile, adapterDirs);
            return (prompt!, stop);
        }
        var chat = ChatCli.Prompter(modelDir, templateFile);
        ChatCli.WarnOnTemplateMismatch(chat, adapterDirs);
        var (text, endOfTurn) = ChatCli.ChatPrompt(chat, chatFile, tokenizer);
        stop.UnionWith(endOfTurn);
        return (text, stop);
    }
}
