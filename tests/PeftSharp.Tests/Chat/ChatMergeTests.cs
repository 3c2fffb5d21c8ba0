using System.Text.Json.Nodes;
using PeftSharp.Chat;
using PeftSharp.IO;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Chat;

/// <summary>
/// merge gives the merged model the chat template its adapter was trained with: the override (--chat-template) when
/// training used one, written where transformers reads it; the base's files unchanged when training used the base's.
/// </summary>
[Collection("console")]
public class ChatMergeTests(ITestOutputHelper output)
{
    // ChatML without SmolLM's default system prompt: renders differently from the demo model's own template.
    const string Override = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    [Fact]
    public void Merge_writes_the_override_template_the_adapter_was_trained_with()
    {
        string dir = TestPaths.TempDir();
        string model = ChatDemoModel.Build(Path.Combine(dir, "base"));
        File.WriteAllText(Path.Combine(model, "chat_template.jinja"), ChatDemoModel.Template);   // as transformers 4.47+ saves it
        string templateFile = Path.Combine(dir, "override.jinja");
        File.WriteAllText(templateFile, Override);

        string merged = MergeAfterTraining(dir, model, "override", "--chat-template", templateFile);
        Assert.Equal(Override, JsonFile.ReadObject(Path.Combine(merged, "tokenizer_config.json"))["chat_template"]!.GetValue<string>());
        Assert.Equal(Override, File.ReadAllText(Path.Combine(merged, "chat_template.jinja")));
        // The other tokenizer_config.json fields are kept.
        Assert.Equal("<|im_end|>", JsonFile.ReadObject(Path.Combine(merged, "tokenizer_config.json"))["eos_token"]!.GetValue<string>());
        // The merged model now renders chat as its adapter was trained to, with no mismatch warning.
        Assert.Equal(ChatTemplate.HashOf(Override), ChatPrompter.ForModel(merged).Template!.Sha256);
        var (code, stdout, err) = CliCapture.Run("tokenize", "--model", merged, "--chat", ChatFile(dir), "--json");
        Assert.True(code == 0, err);
        Assert.StartsWith("<|im_start|>user", JsonNode.Parse(stdout)!["text"]!.GetValue<string>());
        // The base is untouched.
        Assert.Equal(ChatDemoModel.Template, File.ReadAllText(Path.Combine(model, "chat_template.jinja")));
    }

    [Fact]
    public void Merge_keeps_the_bases_files_when_the_adapter_used_the_bases_template()
    {
        string dir = TestPaths.TempDir();
        string model = ChatDemoModel.Build(Path.Combine(dir, "base"));
        string merged = MergeAfterTraining(dir, model, "own");
        Assert.Equal(File.ReadAllText(Path.Combine(model, "tokenizer_config.json")), File.ReadAllText(Path.Combine(merged, "tokenizer_config.json")));
        Assert.False(File.Exists(Path.Combine(merged, "chat_template.jinja")));
    }

    [Fact]
    public void Merging_adapters_trained_with_different_override_templates_is_refused()
    {
        string dir = TestPaths.TempDir();
        string model = ChatDemoModel.Build(Path.Combine(dir, "base"));
        string a = Path.Combine(dir, "a.jinja"), b = Path.Combine(dir, "b.jinja");
        File.WriteAllText(a, Override);
        File.WriteAllText(b, Override.Replace("'<|im_end|>' + '\n'", "'<|im_end|>' + '\n\n'"));
        string adapterA = Train(dir, model, "a", "--chat-template", a), adapterB = Train(dir, model, "b", "--chat-template", b);
        string merged = Path.Combine(dir, "merged");
        var (code, _, err) = CliCapture.Run("merge", "--model", model, "--adapter", adapterA, "--adapter", adapterB, "--out", merged);
        output.WriteLine(err);
        Assert.NotEqual(0, code);
        Assert.Contains("were trained with different chat templates", err);
        Assert.Contains(adapterA, err);
        Assert.Contains(adapterB, err);
        Assert.DoesNotContain("   at ", err);
        Assert.False(Directory.Exists(merged));
    }

    /// <summary>
    /// Full fine-tuning with --chat-template saves a model that renders chat as it was trained to: the override is
    /// written where transformers reads it (the saved model folder is the whole artefact; there is no adapter record a
    /// later command could compare), and the model folder gets no PeftSharp adapter sidecar.
    /// </summary>
    [Fact]
    public void Full_fine_tuning_with_an_override_template_saves_that_template()
    {
        string dir = TestPaths.TempDir();
        string model = ChatDemoModel.Build(Path.Combine(dir, "base"));
        File.WriteAllText(Path.Combine(model, "chat_template.jinja"), ChatDemoModel.Template);
        string templateFile = Path.Combine(dir, "override.jinja");
        File.WriteAllText(templateFile, Override);

        string saved = Train(dir, model, "full", "--method", "full", "--chat-template", templateFile);
        Assert.Equal(Override, JsonFile.ReadObject(Path.Combine(saved, "tokenizer_config.json"))["chat_template"]!.GetValue<string>());
        Assert.Equal(Override, File.ReadAllText(Path.Combine(saved, "chat_template.jinja")));
        Assert.Equal(ChatTemplate.HashOf(Override), ChatPrompter.ForModel(saved).Template!.Sha256);
        Assert.False(File.Exists(Path.Combine(saved, AdapterFolderFiles.SidecarFile)));
        var (code, stdout, err) = CliCapture.Run("tokenize", "--model", saved, "--chat", ChatFile(dir), "--json");
        Assert.True(code == 0, err);
        Assert.StartsWith("<|im_start|>user", JsonNode.Parse(stdout)!["text"]!.GetValue<string>());
        // Trained with the base's own template: the base's files as they were.
        string plain = Train(dir, model, "full-plain", "--method", "full");
        Assert.Equal(ChatDemoModel.Template, File.ReadAllText(Path.Combine(plain, "chat_template.jinja")));
        Assert.Equal(File.ReadAllText(Path.Combine(model, "tokenizer_config.json")), File.ReadAllText(Path.Combine(plain, "tokenizer_config.json")));
        Assert.Equal(ChatDemoModel.Template, File.ReadAllText(Path.Combine(model, "chat_template.jinja")));
    }

    static string ChatFile(string dir)
    {
        string path = Path.Combine(dir, "ask.json");
        File.WriteAllText(path, new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "code gold crow cup ->" }).ToJsonString());
        return path;
    }

    /// <summary>One training step on a conversation (with <paramref name="extra"/> train flags), then merge; the merged folder.</summary>
    string MergeAfterTraining(string dir, string model, string name, params string[] extra)
    {
        string adapter = Train(dir, model, name, extra);
        string merged = Path.Combine(dir, name + "-merged");
        var m = CliCapture.Run("merge", "--model", model, "--adapter", adapter, "--out", merged);
        output.WriteLine(m.Out + m.Err);
        Assert.True(m.Code == 0, m.Err);
        Assert.DoesNotContain("warning", m.Err);
        return merged;
    }

    /// <summary>One training step on a conversation (with <paramref name="extra"/> train flags); the adapter folder.</summary>
    string Train(string dir, string model, string name, params string[] extra)
    {
        string data = Path.Combine(dir, name + ".jsonl");
        File.WriteAllText(data, new JsonObject { ["messages"] = new JsonArray(
            new JsonObject { ["role"] = "user", ["content"] = "code gold crow cup ->" },
            new JsonObject { ["role"] = "assistant", ["content"] = "ten ebbin fenn" }) }.ToJsonString() + "\n");
        string run = Path.Combine(dir, name + "-run");
        var (code, stdout, err) = CliCapture.Run(["train", "--model", model, "--data", data, "--steps", "1", "--batch", "1",
            "--max-seq", "64", "--out", run, .. (extra.Contains("--method") ? extra : ["--method", "lora", .. extra])]);
        output.WriteLine(stdout + err);
        Assert.True(code == 0, err);
        return Path.Combine(run, "final");
    }
}
