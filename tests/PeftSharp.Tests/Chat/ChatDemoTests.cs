using System.Net.Http.Json;
using System.Text.Json.Nodes;
using PeftSharp.Chat;
using PeftSharp.Models;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Chat;

/// <summary>
/// The chat demo: `train` on {"messages"} data on a template-bearing tiny model, then `generate --chat` and serve's
/// /v1/chat/completions render the same ChatML prompt and answer what training taught.
/// </summary>
[Collection("console")]
public class ChatDemoTests(ITestOutputHelper output)
{
    /// <summary>The first demo tasks as conversations (prompt → user, completion → assistant).</summary>
    static List<(string Question, string Answer)> Tasks(int n) =>
        File.ReadLines(Path.Combine(ChatDemoModel.DemoBase, "..", "train.jsonl")).Take(n)
            .Select(l => JsonNode.Parse(l)!).Select(o => (o["prompt"]!.GetValue<string>(), o["completion"]!.GetValue<string>().Trim())).ToList();

    static JsonArray Messages(string question, string? answer = null) => answer is null
        ? new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question })
        : new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question }, new JsonObject { ["role"] = "assistant", ["content"] = answer });

    [Fact]
    public async Task Train_on_chat_then_generate_and_serve_answer_what_training_taught()
    {
        // One conversation, learned by heart: enough to show the same rendering in training and at inference, quick on a busy CPU.
        var (dir, model, data, tasks) = OneConversation();

        string run = Path.Combine(dir, "run");
        var (code, stdout, err) = CliCapture.Run("train", "--model", model, "--data", data, "--eval-file", data, "--method", "lora", "--rank", "8",
            "--steps", "30", "--batch", "1", "--lr", "0.01", "--warmup", "3", "--max-seq", "64", "--out", run);
        output.WriteLine(stdout + err);
        Assert.True(code == 0, err);
        Assert.DoesNotContain("no chat template", err);   // the model's own template was used
        // Exact match: greedy decoding from the rendered prompt gives the reply and <|im_end|> (the model's EOS).
        Assert.Contains("exact-match accuracy: before 0.0 %, after 100.0 %", stdout);
        string adapter = Path.Combine(run, "final");

        // The adapter records the template it was trained with and the stop ids (EOS and <|im_end|>).
        var chat = ChatPrompter.ForModel(model);
        var record = AdapterChatRecord.Read(adapter)!;
        Assert.Equal(chat.Template!.Sha256, record.TemplateSha256);
        using var tok = TextTokenizer.FromFolder(model);
        Assert.Contains(tok.SpecialTokens["<|im_end|>"], record.StopIds);

        var (question, answer) = tasks[0];
        string chatFile = Path.Combine(dir, "ask.json");
        File.WriteAllText(chatFile, Messages(question).ToJsonString());
        var gen = CliCapture.Run("generate", "--model", model, "--adapter", adapter, "--chat", chatFile, "--max-new-tokens", "8");
        output.WriteLine(gen.Out + gen.Err);
        Assert.Equal(0, gen.Code);
        string prompt = chat.RenderPrompt([("user", question)]);
        Assert.StartsWith(prompt, gen.Out);
        Assert.Equal(answer, gen.Out[prompt.Length..].Trim());
        Assert.DoesNotContain("warning", gen.Err);

        // serve renders the same prompt and answers the same.
        using var lm = ModelLoader.Load(model);
        await using var server = await PeftServer.StartAsync(lm, tok, "chat-demo",
            new ServerOptions { Host = "127.0.0.1", Port = 0, Adapters = [("taught", adapter)], Chat = chat }, new PeftAdapterLoader());
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        var response = await http.PostAsJsonAsync("v1/chat/completions", new JsonObject { ["model"] = "taught", ["messages"] = Messages(question), ["max_tokens"] = 8, ["temperature"] = 0 });
        var body = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        output.WriteLine(body.ToJsonString());
        Assert.Equal(answer, body["choices"]![0]!["message"]!["content"]!.GetValue<string>().Trim());
        Assert.Equal("stop", body["choices"]![0]!["finish_reason"]!.GetValue<string>());
        Assert.Equal(tok.Encode(prompt).Length, body["usage"]!["prompt_tokens"]!.GetValue<int>());

        // A conversation the template refuses is a 400 naming the template's file, not a wrong prompt.
        var bad = await http.PostAsJsonAsync("v1/chat/completions", new JsonObject { ["messages"] = new JsonArray(new JsonObject { ["role"] = "wizard", ["content"] = "x" }) });
        Assert.Equal(400, (int)bad.StatusCode);
    }

    [Fact]
    public void Generate_warns_when_the_base_template_differs_from_the_adapters()
    {
        string dir = TestPaths.TempDir();
        string model = ChatDemoModel.Build(Path.Combine(dir, "base"));
        string adapter = ServingFixtureAdapter(dir, model);
        new AdapterChatRecord(ChatTemplate.HashOf("another template"), "other/tokenizer_config.json:chat_template", [0]).Write(adapter);
        string chatFile = Path.Combine(dir, "ask.json");
        File.WriteAllText(chatFile, Messages("code gold crow cup ->").ToJsonString());
        var (code, _, err) = CliCapture.Run("generate", "--model", model, "--adapter", adapter, "--chat", chatFile, "--max-new-tokens", "2");
        Assert.Equal(0, code);
        Assert.Contains("warning:", err);
        Assert.Contains("other/tokenizer_config.json:chat_template", err);
    }

    /// <summary>
    /// An adapter trained on chat data (`peft train`), loaded in the library and saved again, still records the template
    /// it learned: without it, serve and generate on a base with another template would not warn, and merge/export
    /// could not give the merged model the trained template.
    /// </summary>
    [Fact]
    public void A_chat_adapter_saved_again_by_PeftModel_keeps_its_chat_record()
    {
        var (dir, model, data, _) = OneConversation();
        string run = Path.Combine(dir, "run");
        var (code, _, err) = CliCapture.Run("train", "--model", model, "--data", data, "--method", "lora", "--steps", "1", "--batch", "1", "--max-seq", "64", "--out", run);
        Assert.True(code == 0, err);
        var trained = AdapterChatRecord.Read(Path.Combine(run, "final"))!;
        Assert.NotNull(trained.TemplateSha256);

        string resaved = Path.Combine(dir, "resaved");
        using (var peft = PeftModel.FromPretrained(model, adapter: Path.Combine(run, "final")))
            peft.SaveAdapter(PeftModel.DefaultAdapterName, resaved);
        var record = AdapterChatRecord.Read(resaved);
        Assert.NotNull(record);
        Assert.Equal(trained.TemplateSha256, record.TemplateSha256);
        Assert.Equal(trained.TemplateSource, record.TemplateSource);
        Assert.Equal(trained.StopIds, record.StopIds);
        Assert.Equal(trained.TemplateText, record.TemplateText);
    }

    /// <summary>A temp folder with the chat demo's base model and a chat file of one conversation (messages).</summary>
    static (string Dir, string Model, string Data, List<(string Question, string Answer)> Tasks) OneConversation()
    {
        string dir = TestPaths.TempDir();
        string model = ChatDemoModel.Build(Path.Combine(dir, "base"));
        var tasks = Tasks(1);
        string data = Path.Combine(dir, "chat.jsonl");
        File.WriteAllLines(data, tasks.Select(t => new JsonObject { ["messages"] = Messages(t.Question, t.Answer) }.ToJsonString()));
        return (dir, model, data, tasks);
    }

    /// <summary>A freshly initialised LoRA on <paramref name="model"/>, saved as a trained adapter would be.</summary>
    static string ServingFixtureAdapter(string dir, string model)
    {
        string data = Path.Combine(dir, "one.jsonl");
        File.WriteAllText(data, "{\"text\": \"code gold crow cup -> ten ebbin fenn\"}\n");
        string run = Path.Combine(dir, "fixture-run");
        var (code, _, err) = CliCapture.Run("train", "--model", model, "--data", data, "--method", "lora", "--steps", "1", "--batch", "1", "--max-seq", "16", "--out", run);
        Assert.True(code == 0, err);
        return Path.Combine(run, "final");
    }
}
