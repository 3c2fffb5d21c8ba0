using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.IO;

namespace PeftSharp.Chat;

/// <summary>
/// The chat template a merged model must carry: the one its adapters were trained with, when that was not the base's
/// (trained with --chat-template, or a template saved in the adapter folder: <see cref="AdapterChatRecord.Trained"/>).
/// A merged folder otherwise keeps the base's files, and the base's template is right.
/// </summary>
internal static class MergedChatTemplate
{
    /// <summary>
    /// The template text to write into the merged folder, or null when the base's own template (or none) is right.
    /// Adapters trained with different override templates cannot share one merged model: an error naming both.
    /// </summary>
    public static string? Choose(string baseDir, IEnumerable<string> adapterDirs) => Trained(baseDir, adapterDirs)?.Record.TemplateText;

    /// <summary>
    /// The template an export of the base with <paramref name="adapterDirs"/> (merged, or beside it as an Ollama
    /// ADAPTER) must carry: the adapters' own as <see cref="Choose"/> picks it (<c>FromAdapter</c>), else the base's
    /// (null when it has none).
    /// </summary>
    public static (ChatTemplate? Template, bool FromAdapter) ForExport(string baseDir, IEnumerable<string> adapterDirs) =>
        Trained(baseDir, adapterDirs) is var (dir, record)
            ? (ChatTemplate.FromText(baseDir, record.TemplateText!, record.TextSource ?? dir), true)
            : (ChatTemplate.Load(baseDir), false);

    static (string Dir, AdapterChatRecord Record)? Trained(string baseDir, IEnumerable<string> adapterDirs)
    {
        var overrides = adapterDirs.Select(d => (Dir: d, Record: AdapterChatRecord.Trained(d)))
            .Where(x => x.Record?.TemplateText is not null).ToList();
        if (overrides.Count == 0) return null;
        string? baseSha;
        try { baseSha = ChatTemplate.Load(baseDir)?.Sha256; }
        catch (InvalidDataException) { baseSha = null; }   // a base template that cannot be used is not the adapters' either
        var differing = overrides.Where(x => x.Record!.TemplateSha256 != baseSha).ToList();
        if (differing.Count == 0) return null;
        var other = overrides.FirstOrDefault(x => x.Record!.TemplateSha256 != differing[0].Record!.TemplateSha256);
        if (other.Record is not null)
            throw new InvalidDataException($"{differing[0].Dir} and {other.Dir} were trained with different chat templates " +
                $"({differing[0].Record!.TemplateSource}, {other.Record.TemplateSource}); merge them into separate models");
        return (differing[0].Dir, differing[0].Record!);
    }

    /// <summary>
    /// Writes <paramref name="template"/> into a model folder as transformers' save_pretrained leaves it: the
    /// tokenizer_config.json "chat_template" field (read by every transformers version) and, where the folder has a
    /// chat_template.jinja (which transformers 4.47+ prefers to the field), that file too, so both agree.
    /// </summary>
    public static void WriteInto(string folder, string template)
    {
        string configPath = Path.Combine(folder, "tokenizer_config.json");
        var config = File.Exists(configPath) ? JsonFile.ReadObject(configPath) : new JsonObject();
        config["chat_template"] = template;
        AtomicFile.WriteAllText(configPath, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        string jinja = Path.Combine(folder, "chat_template.jinja");
        if (File.Exists(jinja)) AtomicFile.WriteAllText(jinja, template);
    }
}
