using System.Text.Json.Nodes;
using PeftSharp.Chat;
using PeftSharp.Training.Preference;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Chat;

/// <summary>
/// Conversational preference pairs are rendered with the model's chat template and split as TRL splits them: the
/// prompt messages rendered with add_generation_prompt=True, the response the rest of the whole rendering.
/// </summary>
[Collection("console")]
public class ChatPreferenceTests(ITestOutputHelper output)
{
    static JsonObject Msg(string role, string content) => new() { ["role"] = role, ["content"] = content };

    static string PairsFile(string dir, string question, string chosen, string rejected)
    {
        string path = Path.Combine(dir, "pairs.jsonl");
        var pair = new JsonObject
        {
            ["chosen"] = new JsonArray(Msg("user", question), Msg("assistant", chosen)),
            ["rejected"] = new JsonArray(Msg("user", question), Msg("assistant", rejected)),
        };
        File.WriteAllText(path, pair.ToJsonString() + "\n" + pair.ToJsonString() + "\n");
        return path;
    }

    static string Text(IEnumerable<PeftSharp.Data.TextSegment> s) => string.Concat(s.Select(x => x.Text));

    [Fact]
    public void ChatML_pairs_split_at_the_generation_prompt_and_train_on_the_reply_and_its_end_of_turn()
    {
        var chat = new ChatPrompter(new ChatTemplate(ChatDemoModel.Template, new Dictionary<string, string>(), "chatml.jinja"));
        var pair = PreferenceReader.Read(PairsFile(TestPaths.TempDir(), "What is 2+2?", "4", "5"), chat)[0];
        Assert.True(pair.Rendered);
        Assert.Equal("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
            Text(pair.Prompt));
        Assert.All(pair.Prompt, s => Assert.False(s.Trainable));
        Assert.Equal("4<|im_end|>", Text(pair.Chosen.Where(s => s.Trainable)));
        Assert.Equal("5<|im_end|>", Text(pair.Rejected.Where(s => s.Trainable)));
        Assert.Equal("\n", Text(pair.Chosen.Where(s => !s.Trainable)));   // trailing whitespace is context, as in SFT
    }

    [Fact]
    public void Llama3_pairs_end_the_reply_with_eot_id()
    {
        var golden = ChatFixtures.Golden("llama-3.1");
        var template = ChatFixtures.TemplateOf(golden, "llama-3.1");
        var pair = PreferenceReader.Read(PairsFile(TestPaths.TempDir(), "Capital of France?", "Paris.", "Lyon."), new ChatPrompter(template))[0];
        string prompt = Text(pair.Prompt);
        Assert.Equal("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", prompt);
        Assert.Equal("Paris.<|eot_id|>", Text(pair.Chosen));
        Assert.Equal("Lyon.<|eot_id|>", Text(pair.Rejected));
        // prompt + response is exactly the whole conversation's rendering
        Assert.Equal(template.Render([("user", "Capital of France?"), ("assistant", "Paris.")], false), prompt + Text(pair.Chosen));
    }

    [Fact]
    public void A_model_without_a_template_keeps_the_simple_format_with_the_note()
    {
        var notes = new List<string>();
        var chat = ChatPrompter.ForModel(ChatDemoModel.DemoBase, note: notes.Add);
        var pair = PreferenceReader.Read(PairsFile(TestPaths.TempDir(), "q", "a", "b"), chat)[0];
        Assert.False(pair.Rendered);
        Assert.Contains("<|user|>", Text(pair.Prompt));
        Assert.Contains(notes, n => n.Contains("no chat template"));
    }

    [Fact]
    public void Dpo_and_eval_render_with_the_models_template_and_honour_chat_template()
    {
        string dir = TestPaths.TempDir();
        string model = ChatDemoModel.Build(Path.Combine(dir, "base"));
        var tasks = File.ReadLines(Path.Combine(ChatDemoModel.DemoBase, "..", "train.jsonl")).Take(2).Select(l => JsonNode.Parse(l)!).ToList();
        string data = PairsFile(dir, tasks[0]["prompt"]!.GetValue<string>(), tasks[0]["completion"]!.GetValue<string>().Trim(), tasks[1]["completion"]!.GetValue<string>().Trim());

        string run = Path.Combine(dir, "dpo");
        var (code, stdout, err) = CliCapture.Run("train", "--method", "dpo", "--adapter-method", "lora", "--model", model, "--data", data, "--eval-file", data,
            "--out", run, "--steps", "2", "--batch", "2", "--max-seq", "64", "--eval-interval", "1000");
        output.WriteLine(stdout + err);
        Assert.True(code == 0, err + stdout);
        Assert.DoesNotContain("no chat template", err);
        // The adapter records the template its pairs were rendered with (only template-rendered training data does).
        Assert.Equal(ChatPrompter.ForModel(model).Template!.Sha256, AdapterChatRecord.Read(Path.Combine(run, "final"))!.TemplateSha256);

        // eval renders the pairs with the base's template: silent when it is the adapter's, a warning (as generate,
        // serve and merge give) when another template renders them.
        string other = Path.Combine(dir, "other.jinja");
        File.WriteAllText(other, "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}");
        var same = CliCapture.Run("eval", "--model", model, "--adapter", Path.Combine(run, "final"), "--data", data, "--max-seq", "64");
        Assert.True(same.Code == 0, same.Err);
        Assert.DoesNotContain("warning", same.Err);
        var differs = CliCapture.Run("eval", "--model", model, "--adapter", Path.Combine(run, "final"), "--data", data, "--max-seq", "64", "--chat-template", other);
        Assert.True(differs.Code == 0, differs.Err);
        Assert.Contains($"warning: {Path.Combine(run, "final")} was trained with chat template", differs.Err);
        Assert.Contains($"but chat is now rendered with chat template {other}", differs.Err);

        // --chat-template is honoured by train and eval: a template whose whole rendering does not start with the
        // prompt's (it writes another assistant header for the generation prompt) is an error naming file:line.
        string bad = Path.Combine(dir, "bad.jinja");
        File.WriteAllText(bad, "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT>' }}{% endif %}");
        foreach (var args in new[]
        {
            new[] { "train", "--method", "dpo", "--adapter-method", "lora", "--model", model, "--data", data, "--out", Path.Combine(dir, "bad-run"), "--steps", "1", "--chat-template", bad },
            new[] { "eval", "--model", model, "--data", data, "--chat-template", bad },
        })
        {
            var r = CliCapture.Run(args);
            output.WriteLine(r.Out + r.Err);
            Assert.NotEqual(0, r.Code);
            Assert.Contains($"{data}:1: the chat template ({bad})", r.Err);
            Assert.Contains("add_generation_prompt=True", r.Err);
            Assert.DoesNotContain("   at ", r.Err);
        }
    }
}
