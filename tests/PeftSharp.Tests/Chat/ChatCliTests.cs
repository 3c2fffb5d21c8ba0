using System.Text.Json.Nodes;
using PeftSharp.Models;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Chat;

/// <summary>peft tokenize, and the chat errors every command gives: one line naming the file and the cause, nothing written.</summary>
[Collection("console")]
public class ChatCliTests(ITestOutputHelper output)
{
    static string ChatFile(string dir, JsonArray messages)
    {
        string path = Path.Combine(dir, $"chat-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, messages.ToJsonString());
        return path;
    }

    [Fact]
    public void Tokenize_help_renders()
    {
        // (Spectre writes help to a console the capture does not always see, so only the outcome is checked:
        // option descriptions that are not valid markup make --help fail.)
        var (code, _, err) = CliCapture.Run("tokenize", "--help");
        Assert.True(code == 0, err);
        Assert.DoesNotContain("error", err);
    }

    [Fact]
    public void Tokenize_text_prints_the_ids_with_default_special_tokens()
    {
        var (code, stdout, err) = CliCapture.Run("tokenize", "--model", TestPaths.TinyLlama, "--text", "hello world", "--json");
        Assert.True(code == 0, err);
        var json = JsonNode.Parse(stdout)!;
        using var tok = TextTokenizer.Load(TestPaths.TinyLlama);
        Assert.Equal(tok.Encode("hello world", addSpecialTokens: true), json["ids"]!.AsArray().Select(x => x!.GetValue<int>()));
        Assert.Equal(json["ids"]!.AsArray().Count, json["tokens"]!.AsArray().Count);
        Assert.Null(json["text"]);
    }

    [Fact]
    public void Tokenize_chat_prints_the_reference_rendering_and_ids_of_a_real_model()
    {
        if (ChatFixtures.SharedReal is not { } real) { output.WriteLine("skipped: ../shared/fixtures/real is absent"); return; }
        var golden = ChatFixtures.Golden("smollm");
        var c = golden["cases"]!.AsArray().Select(x => x!.AsObject())
            .First(x => x["conversation"]!.GetValue<string>() == "system-multi-turn" && x["add_generation_prompt"]!.GetValue<bool>());
        string file = ChatFile(TestPaths.TempDir(), c["messages"]!.AsArray().DeepClone().AsArray());
        var (code, stdout, err) = CliCapture.Run("tokenize", "--model", Path.Combine(real, "smollm135m-medflash-lora"), "--chat", file, "--add-generation-prompt", "--json");
        Assert.True(code == 0, err);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal(c["text"]!.GetValue<string>(), json["text"]!.GetValue<string>());
        Assert.Equal(c["ids"]!.AsArray().Select(x => x!.GetValue<int>()), json["ids"]!.AsArray().Select(x => x!.GetValue<int>()));
    }

    [Fact]
    public void Tokenize_chat_plain_output_shows_text_ids_and_tokens()
    {
        string dir = TestPaths.TempDir();
        string model = ChatDemoModel.Build(Path.Combine(dir, "m"));
        string file = ChatFile(dir, new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "code red fox" }));
        var (code, stdout, err) = CliCapture.Run("tokenize", "--model", model, "--chat", file);
        Assert.True(code == 0, err);
        Assert.Contains("text: \"<|im_start|>system\\nYou are a helpful AI assistant", stdout);
        using var tok = TextTokenizer.Load(model);
        Assert.Contains($"ids (", stdout);
        Assert.StartsWith($"[{tok.SpecialTokens["<|im_start|>"]}, ", stdout.Split("): ")[1]);
        Assert.Contains("tokens: [\"<|im_start|>\", \"system\", ", stdout);   // tokens, by name
        Assert.DoesNotContain("<|im_start|>assistant", stdout); // no generation prompt unless asked
    }

    [Theory]
    [InlineData("[{\"role\": \"wizard\", \"content\": \"x\"}]", "unknown role 'wizard'")]
    [InlineData("[{\"role\": \"user\"}]", "field 'content' must be a string")]
    [InlineData("[]", "'messages' is empty")]
    [InlineData("{\"messages\": 3}", "'messages' must be an array")]
    [InlineData("[{", "not valid JSON")]
    public void Bad_chat_files_are_one_line_naming_the_file(string json, string cause)
    {
        string dir = TestPaths.TempDir();
        string file = Path.Combine(dir, "bad.json");
        File.WriteAllText(file, json);
        string model = ChatDemoModel.Build(Path.Combine(dir, "m"));
        foreach (var args in new[] { new[] { "tokenize", "--model", model, "--chat", file }, ["generate", "--model", model, "--chat", file, "--max-new-tokens", "1"] })
        {
            var (code, stdout, err) = CliCapture.Run(args);
            Assert.Equal(1, code);
            Assert.Contains(file, err);
            Assert.Contains(cause, err);
            Assert.Single(err.Trim().Split('\n'));
            Assert.DoesNotContain("   at ", err);
        }
    }

    [Fact]
    public void An_unsupported_or_raising_template_names_its_file_and_train_writes_nothing()
    {
        string dir = TestPaths.TempDir();
        string model = ChatDemoModel.Build(Path.Combine(dir, "m"));
        string unsupported = Path.Combine(dir, "unsupported.jinja");
        File.WriteAllText(unsupported, "{% for m in messages %}{% include 'turn.jinja' %}{% endfor %}");
        string chat = ChatFile(dir, new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }));
        var (code, _, err) = CliCapture.Run("tokenize", "--model", model, "--chat", chat, "--chat-template", unsupported);
        Assert.Equal(1, code);
        Assert.Contains(unsupported, err);
        Assert.Contains("statement '{% include %}'", err);

        string strict = Path.Combine(dir, "strict.jinja");
        File.WriteAllText(strict, "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{{ m['content'] }}{% endfor %}");
        string data = Path.Combine(dir, "chat.jsonl");
        File.WriteAllText(data, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n" +
                                "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"b\"}, {\"role\": \"assistant\", \"content\": \"c\"}]}\n");
        string run = Path.Combine(dir, "run");
        (code, _, err) = CliCapture.Run("train", "--model", model, "--data", data, "--chat-template", strict, "--method", "lora", "--steps", "1", "--out", run);
        Assert.Equal(1, code);
        Assert.Contains($"{data}:2", err);
        Assert.Contains(strict, err);
        Assert.Contains("Conversation roles must alternate", err);
        Assert.False(Directory.Exists(run));
    }

    /// <summary>
    /// A chat file or chat template that is not UTF-8 (Latin-1 "café") is refused as training data is, naming the file
    /// and the byte; it used to be read with U+FFFD in place of the byte and answered as if the user had typed that.
    /// </summary>
    [Fact]
    public void A_chat_file_or_template_that_is_not_utf8_is_refused()
    {
        string dir = TestPaths.TempDir();
        string chat = Path.Combine(dir, "latin1.json"), template = Path.Combine(dir, "latin1.jinja");
        File.WriteAllBytes(chat, [.. "[{\"role\": \"user\", \"content\": \"caf"u8, 0xE9, .. "\"}]"u8]);
        File.WriteAllBytes(template, [.. "{% for m in messages %}caf"u8, 0xE9, .. " {{ m['content'] }}{% endfor %}"u8]);
        string good = ChatFile(dir, new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }));
        foreach (var (args, file, offset) in new[]
        {
            (new[] { "generate", "--model", TestPaths.TinyLlama, "--chat", chat, "--max-new-tokens", "1" }, chat, 33),
            (new[] { "generate", "--model", TestPaths.TinyLlama, "--chat", good, "--chat-template", template, "--max-new-tokens", "1" }, template, 26),
            (new[] { "tokenize", "--model", TestPaths.TinyLlama, "--chat", chat }, chat, 33),
        })
        {
            var (code, stdout, err) = CliCapture.Run(args);
            output.WriteLine(err);
            Assert.Equal(1, code);
            Assert.Equal($"error: {file}: not valid UTF-8 text (bad byte at offset {offset}); convert the file to UTF-8", err.Trim());
            Assert.Equal("", stdout);
        }
    }
}
