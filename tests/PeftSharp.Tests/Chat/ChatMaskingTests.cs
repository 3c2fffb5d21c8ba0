using System.Text.Json.Nodes;
using PeftSharp.Chat;
using PeftSharp.Data;
using PeftSharp.Models;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Chat;

/// <summary>Assistant-only loss on templated chat: exactly each reply and its end-of-turn marker, through DatasetReader/SequenceBuilder.</summary>
public class ChatMaskingTests(ITestOutputHelper output)
{
    static List<JsonObject> Conversation(bool system) =>
    [
        .. system ? [new JsonObject { ["role"] = "system", ["content"] = "Answer with one word." }] : Array.Empty<JsonObject>(),
        new() { ["role"] = "user", ["content"] = "Capital of France?" },
        new() { ["role"] = "assistant", ["content"] = "Paris" },
        new() { ["role"] = "user", ["content"] = "And of Italy?" },
        new() { ["role"] = "assistant", ["content"] = "Rome" },
    ];

    static string Learned(IEnumerable<TextSegment> segments) => string.Join("|", segments.Where(s => s.Trainable).Select(s => s.Text));

    [Fact]
    public void Conversational_prompt_completion_learns_the_completion_only()
    {
        // TRL's conversational prompt-completion format: the same rendering as "messages", the loss on the completion's
        // reply only (the prompt's assistant turn is context), as TRL's completion-only loss.
        if (ChatFixtures.SharedReal is not { } real) { output.WriteLine("skipped: ../shared/fixtures/real is absent"); return; }
        string model = Path.Combine(real, "smollm135m-medflash-lora"), dir = TestPaths.TempDir();
        var turns = Conversation(system: true);
        string split = Path.Combine(dir, "pc.jsonl"), whole = Path.Combine(dir, "messages.jsonl");
        File.WriteAllText(split, new JsonObject
        {
            ["prompt"] = new JsonArray(turns.Take(4).Select(m => (JsonNode)m.DeepClone()).ToArray()),
            ["completion"] = new JsonArray(turns.Skip(4).Select(m => (JsonNode)m.DeepClone()).ToArray()),
        }.ToJsonString() + "\n");
        File.WriteAllText(whole, new JsonObject { ["messages"] = new JsonArray(turns.Select(m => (JsonNode)m.DeepClone()).ToArray()) }.ToJsonString() + "\n");
        using var tok = TextTokenizer.Load(model);
        var chat = ChatPrompter.ForModel(model);
        var a = SequenceBuilder.Tokenize(DatasetReader.Read(split, chat).Single(), tok, tok.EosId);
        var b = SequenceBuilder.Tokenize(DatasetReader.Read(whole, chat).Single(), tok, tok.EosId);
        Assert.Equal(b.Ids, a.Ids);
        int end = tok.SpecialTokens["<|im_end|>"];
        Assert.Equal([.. tok.Encode("Rome"), end], a.Labels.Where(l => l != TokenSequence.Ignore).ToArray());
        Assert.Equal([.. tok.Encode("Paris"), end, .. tok.Encode("Rome"), end], b.Labels.Where(l => l != TokenSequence.Ignore).ToArray());

        File.WriteAllText(split, """{"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "user", "content": "Hi"}]}""" + "\n");
        var e = Assert.Throws<InvalidDataException>(() => DatasetReader.Read(split, chat));
        Assert.Contains("'completion' has no assistant message", e.Message);
    }

    [Fact]
    public void Llama3_learns_each_reply_and_its_eot_only()
    {
        var t = ChatFixtures.TemplateOf(ChatFixtures.Golden("llama-3.1"), "llama-3.1");
        var segments = ChatMasking.Segments(t, Conversation(system: true), "x.jsonl:1");
        Assert.Equal(t.Render(Conversation(system: true), false), string.Concat(segments.Select(s => s.Text)));
        Assert.Equal("Paris<|eot_id|>|Rome<|eot_id|>", Learned(segments));
        Assert.EndsWith("<|start_header_id|>assistant<|end_header_id|>\n\n", segments[^2].Text);
    }

    [Theory]
    [InlineData("smollm")]
    [InlineData("qwen2.5")]
    public void ChatML_learns_each_reply_and_im_end_not_the_newline_after_it(string name)
    {
        var t = ChatFixtures.TemplateOf(ChatFixtures.Golden(name), name);
        var segments = ChatMasking.Segments(t, Conversation(system: false), "x.jsonl:1");
        Assert.Equal("Paris<|im_end|>|Rome<|im_end|>", Learned(segments));
        Assert.Equal("\n", segments[^1].Text);
        Assert.False(segments[^1].Trainable);
    }

    /// <summary>
    /// Phi-3's template ends a conversation without a generation prompt with eos_token, so rendering up to the first
    /// reply ("...Paris&lt;|end|&gt;\n&lt;|endoftext|&gt;") is not a prefix of the whole: every multi-turn Phi-3 chat was
    /// refused ("cannot mark assistant spans"). The closing EOS is context; each reply and its &lt;|end|&gt; are learned.
    /// </summary>
    [Fact]
    public void Phi3_multi_turn_learns_each_reply_and_end_not_the_closing_eos()
    {
        var t = ChatFixtures.TemplateOf(ChatFixtures.Golden("phi-3"), "phi-3");
        var segments = ChatMasking.Segments(t, Conversation(system: true), "x.jsonl:1");
        Assert.Equal(t.Render(Conversation(system: true), false), string.Concat(segments.Select(s => s.Text)));
        Assert.Equal("Paris<|end|>|Rome<|end|>", Learned(segments));
        Assert.Equal("\n<|endoftext|>", segments[^1].Text);
        Assert.False(segments[^1].Trainable);
    }

    [Fact]
    public void Phi3_end_of_turn_is_end_not_the_closing_eos()
    {
        // Generation and serving stop a chat reply on these ids (and adapters record them): Phi-3's reply ends with
        // <|end|>; the <|endoftext|> its template writes after the whole conversation is not a turn's end.
        if (ChatFixtures.SharedReal is not { } real) { output.WriteLine("skipped: ../shared/fixtures/real is absent"); return; }
        // Phi-3's tokenizer is Llama-2's vocabulary plus its chat tokens as added special tokens (ids as Phi-3's own).
        var json = PeftSharp.IO.JsonFile.ReadObject(Path.Combine(real, "tinyllama-chat-tokenizer", "tokenizer.json"));
        string[] added = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>", "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"];
        foreach (var (text, id) in added.Select((t, i) => (t, 32000 + i)))
            json["added_tokens"]!.AsArray().Add(new JsonObject { ["id"] = id, ["content"] = text, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true });
        string path = Path.Combine(TestPaths.TempDir(), "tokenizer.json");
        File.WriteAllText(path, json.ToJsonString());
        using var tok = new TextTokenizer(path);
        var ids = new ChatPrompter(ChatFixtures.TemplateOf(ChatFixtures.Golden("phi-3"), "phi-3")).EndOfTurnIds(tok);
        Assert.Equal([32007], ids);
    }

    [Fact]
    public void ChatML_token_labels_are_the_reply_and_im_end_tokens()
    {
        if (ChatFixtures.SharedReal is not { } real) { output.WriteLine("skipped: ../shared/fixtures/real is absent"); return; }
        string data = Path.Combine(TestPaths.TempDir(), "chat.jsonl");
        File.WriteAllText(data, new JsonObject { ["messages"] = new JsonArray(Conversation(system: true).Select(m => (JsonNode)m.DeepClone()).ToArray()) }.ToJsonString() + "\n");
        string model = Path.Combine(real, "smollm135m-medflash-lora");
        using var tok = TextTokenizer.Load(model);
        var chat = ChatPrompter.ForModel(model);
        var seq = SequenceBuilder.Tokenize(DatasetReader.Read(data, chat).Single(), tok, tok.EosId);
        // The ids are the whole rendering tokenized as apply_chat_template(tokenize=True) does; nothing added.
        Assert.Equal(tok.Encode(chat.Template!.Render(Conversation(system: true), false)), seq.Ids);
        var learned = seq.Labels.Where(l => l != TokenSequence.Ignore).ToArray();
        Assert.Equal([.. tok.Encode("Paris"), tok.SpecialTokens["<|im_end|>"], .. tok.Encode("Rome"), tok.SpecialTokens["<|im_end|>"]], learned);
    }

    [Fact]
    public void Llama3_token_labels_are_the_reply_and_eot_tokens()
    {
        var golden = ChatFixtures.Golden("llama-3.1");
        if (ChatFixtures.TokenizerPath(golden, out string why) is not { } path) { output.WriteLine($"skipped: {why}"); return; }
        using var tok = new TextTokenizer(path);
        var ex = new ChatPrompter(ChatFixtures.TemplateOf(golden, "llama-3.1")).ToExample(Conversation(system: false), "x");
        var seq = SequenceBuilder.Tokenize(ex, tok, tok.EosId);
        Assert.Equal(tok.SpecialTokens["<|begin_of_text|>"], seq.Ids[0]);
        Assert.Equal(1, seq.Ids.Count(i => i == tok.SpecialTokens["<|begin_of_text|>"])); // the template's BOS only, none added
        int eot = tok.SpecialTokens["<|eot_id|>"];
        Assert.Equal([.. tok.Encode("Paris"), eot, .. tok.Encode("Rome"), eot], seq.Labels.Where(l => l != TokenSequence.Ignore).ToArray());
    }

    [Fact]
    public void Eval_prompt_is_the_rendering_up_to_the_last_reply_and_the_answer_its_content()
    {
        if (ChatFixtures.SharedReal is not { } real) { output.WriteLine("skipped: ../shared/fixtures/real is absent"); return; }
        string model = Path.Combine(real, "smollm135m-medflash-lora");
        string data = Path.Combine(TestPaths.TempDir(), "chat.jsonl");
        File.WriteAllText(data, new JsonObject { ["messages"] = new JsonArray(Conversation(system: false).Select(m => (JsonNode)m.DeepClone()).ToArray()) }.ToJsonString() + "\n");
        using var tok = TextTokenizer.Load(model);
        var chat = ChatPrompter.ForModel(model);
        var d = TrainingData.Load(data, tok, 512, packing: false, evalPath: data, chat: chat);
        var pa = Assert.Single(d.EvalPrompts);
        var firstTurns = Conversation(system: false).Take(3).ToList();
        Assert.Equal(tok.Encode(chat.Template!.Render(firstTurns, addGenerationPrompt: true)), pa.Prompt);
        Assert.Equal(tok.Encode("Rome"), pa.Answer);
    }

    /// <summary>
    /// Exact match expects what training teaches: the eval prompt, the answer and its end-of-turn id are the training
    /// ids of the conversation up to the last reply's end. With a SentencePiece tokenizer (TinyLlama's Zephyr template),
    /// the answer used to be "Rome&lt;/s&gt;" encoded on its own ("▁Rome"), never what the model learns after
    /// "&lt;|assistant|&gt;\n" ("Rome" without the "▁"), so exact match was 0% whatever the model said.
    /// </summary>
    [Theory]
    [InlineData("tinyllama-chat-template-jinja")]
    [InlineData("smollm135m-medflash-lora")]
    public void Eval_answer_ids_are_the_ids_training_learns(string folder)
    {
        if (ChatFixtures.SharedReal is not { } real) { output.WriteLine("skipped: ../shared/fixtures/real is absent"); return; }
        string model = Path.Combine(real, folder), data = Path.Combine(TestPaths.TempDir(), "chat.jsonl");
        File.WriteAllText(data, new JsonObject { ["messages"] = new JsonArray(Conversation(system: true).Select(m => (JsonNode)m.DeepClone()).ToArray()) }.ToJsonString() + "\n");
        using var tok = TextTokenizer.Load(model);
        var chat = ChatPrompter.ForModel(model);
        var d = TrainingData.Load(data, tok, 512, packing: false, evalPath: data, chat: chat);
        var pa = Assert.Single(d.EvalPrompts);
        var trained = Assert.Single(d.Train);
        int[] expected = [.. pa.Prompt, .. pa.Answer, .. pa.EndIds];
        Assert.Equal(trained.Ids[..expected.Length], expected);
        Assert.Equal(trained.Ids[pa.Prompt.Length..expected.Length], trained.Labels[pa.Prompt.Length..expected.Length]);   // all learned
        Assert.Equal(TokenSequence.Ignore, trained.Labels[pa.Prompt.Length - 1]);
        Assert.Equal("Rome", tok.Decode(pa.Answer).Trim());
    }

    [Fact]
    public void Base_llama3_template_that_always_adds_the_assistant_header_learns_the_replies_only()
    {
        // Meta-Llama-3-8B (base)'s template ends every rendering with the assistant header, add_generation_prompt or not:
        // text after the last message, like Phi-3's closing EOS, so it is context (it used to refuse the conversation).
        var t = ChatFixtures.TemplateOf(ChatFixtures.Golden("llama-3"), "llama-3");
        var segments = new ChatPrompter(t).ToExample(Conversation(system: false), "data.jsonl:1").Segments;
        Assert.Equal(t.Render(Conversation(system: false), false), string.Concat(segments.Select(s => s.Text)));
        Assert.Equal("Paris<|eot_id|>|Rome<|eot_id|>", Learned(segments));
        Assert.Equal("<|start_header_id|>assistant<|end_header_id|>\n\n", segments[^1].Text);
    }

    [Fact]
    public void A_template_that_rewrites_earlier_turns_cannot_mark_spans_and_says_so()
    {
        // Prints only the last message: rendering up to a reply is not a prefix of the whole conversation.
        var t = new ChatTemplate("{{ messages[-1]['content'] }}{% if add_generation_prompt %}>{% endif %}", new Dictionary<string, string>(), "last-only.jinja");
        var e = Assert.Throws<InvalidDataException>(() => new ChatPrompter(t).ToExample(Conversation(system: false), "data.jsonl:3"));
        Assert.Contains("data.jsonl:3", e.Message);
        Assert.Contains("cannot mark assistant spans", e.Message);
        Assert.Contains("last-only.jinja", e.Message);
    }

    [Fact]
    public void Data_errors_name_the_line_role_and_template()
    {
        string data = Path.Combine(TestPaths.TempDir(), "chat.jsonl");
        File.WriteAllText(data, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n" +
                                "{\"messages\": [{\"role\": \"wizard\", \"content\": \"a\"}]}\n");
        var e = Assert.Throws<InvalidDataException>(() => DatasetReader.Read(data));
        Assert.Contains($"{data}:2", e.Message);
        Assert.Contains("unknown role 'wizard'", e.Message);

        File.WriteAllText(data, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"b\"}, {\"role\": \"assistant\", \"content\": \"c\"}]}\n");
        var mistral = new ChatPrompter(ChatFixtures.TemplateOf(ChatFixtures.Golden("mistral-v0.1"), "mistral-v0.1"));
        var raised = Assert.Throws<InvalidDataException>(() => DatasetReader.Read(data, mistral));
        Assert.Contains("goldens/mistral-v0.1.json", raised.Message);
        Assert.Contains("Conversation roles must alternate", raised.Message);
    }

    [Fact]
    public void A_model_without_a_template_keeps_the_simple_format_with_one_note()
    {
        var notes = new List<string>();
        var chat = ChatPrompter.ForModel(TestPaths.TinyLlama, note: notes.Add);
        Assert.Equal("<|user|>\nhi\n<|assistant|>\n", chat.RenderPrompt([("user", "hi")]));
        chat.RenderPrompt([("user", "again")]);
        Assert.Single(notes);
        Assert.Contains("no chat template", notes[0]);
    }
}
