using PeftSharp.Models;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Chat;

/// <summary>
/// Real chat templates (Llama-2, Llama-3/3.1, Mistral v0.1/v0.3/Nemo, Qwen2.5, Qwen3, Zephyr, TinyLlama, SmolLM, Phi-3,
/// Gemma 2/3) render byte-identical to @huggingface/jinja on multi-turn conversations with and without a system
/// message and a generation prompt, raise the same messages, and tokenize to the reference ids.
/// </summary>
public class ChatTemplateGoldenTests(ITestOutputHelper output)
{
    [Theory]
    [MemberData(nameof(ChatFixtures.GoldenNames), MemberType = typeof(ChatFixtures))]
    public void Renders_byte_identical_to_the_reference(string name)
    {
        var golden = ChatFixtures.Golden(name);
        var template = ChatFixtures.TemplateOf(golden, name);
        int rendered = 0, raised = 0;
        foreach (var c in golden["cases"]!.AsArray().Select(x => x!.AsObject()))
        {
            var messages = ChatFixtures.Messages(c);
            bool gen = c["add_generation_prompt"]!.GetValue<bool>();
            string what = $"{name} {c["conversation"]} add_generation_prompt={gen}";
            if (c["error"] is { } error)
            {
                var e = Assert.Throws<InvalidDataException>(() => template.Render(messages, gen));
                Assert.Contains(error.GetValue<string>(), e.Message);
                Assert.Contains($"goldens/{name}.json", e.Message);
                raised++;
            }
            else
            {
                string expected = c["text"]!.GetValue<string>();
                string actual = template.Render(messages, gen);
                Assert.True(expected == actual, $"{what}:\nexpected {System.Text.Json.JsonSerializer.Serialize(expected)}\nactual   {System.Text.Json.JsonSerializer.Serialize(actual)}");
                rendered++;
            }
        }
        Assert.True(rendered > 0);
        output.WriteLine($"{name}: {rendered} renderings identical, {raised} raised the reference's message");
    }

    [Theory]
    [InlineData("tinyllama-chat", "tinyllama-chat-tokenizer")]
    [InlineData("tinyllama-chat-jinja", "tinyllama-chat-template-jinja")]
    [InlineData("mistral-v0.1", "mistral-7b-instruct-v0.1-chat-template")]
    [InlineData("llama-2-chat", "llama-2-chat-template")]
    [InlineData("smollm", "smollm135m-medflash-lora")]
    [InlineData("qwen2.5", "qwen25-05b-instruct-lora")]
    public void Real_model_folders_load_their_template_and_special_tokens(string name, string folder)
    {
        if (ChatFixtures.SharedReal is not { } real) { output.WriteLine("skipped: ../shared/fixtures/real is absent"); return; }
        var golden = ChatFixtures.Golden(name);
        var loaded = PeftSharp.Chat.ChatTemplate.Load(Path.Combine(real, folder))!;
        Assert.Equal(golden["template"]!.GetValue<string>(), loaded.Text);
        foreach (var (key, value) in golden["special_tokens"]!.AsObject())
            Assert.Equal(value!.GetValue<string>(), loaded.SpecialTokens[key]);
        foreach (var c in golden["cases"]!.AsArray().Select(x => x!.AsObject()).Where(c => c["text"] is not null))
            Assert.Equal(c["text"]!.GetValue<string>(), loaded.Render(ChatFixtures.Messages(c), c["add_generation_prompt"]!.GetValue<bool>()));
    }

    [Theory]
    [MemberData(nameof(ChatFixtures.GoldenNames), MemberType = typeof(ChatFixtures))]
    public void Rendered_text_tokenizes_to_the_reference_ids(string name)
    {
        var golden = ChatFixtures.Golden(name);
        string? path = ChatFixtures.TokenizerPath(golden, out string why);
        if (path is null) { output.WriteLine($"skipped {name}: {why}"); return; }
        using var tokenizer = new TextTokenizer(path);
        int compared = 0;
        foreach (var c in golden["cases"]!.AsArray().Select(x => x!.AsObject()).Where(c => c["ids"] is not null))
        {
            int[] expected = c["ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
            // apply_chat_template(tokenize=True) encodes the rendered text without adding special tokens.
            int[] actual = tokenizer.Encode(c["text"]!.GetValue<string>(), addSpecialTokens: false);
            Assert.True(expected.SequenceEqual(actual), $"{name} {c["conversation"]}: expected [{string.Join(",", expected)}]\nactual [{string.Join(",", actual)}]");
            compared++;
        }
        Assert.True(compared > 0);
        output.WriteLine($"{name}: ids equal on {compared} renderings ({path})");
    }
}
