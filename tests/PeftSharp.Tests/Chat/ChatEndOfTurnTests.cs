using System.Net.Http.Json;
using System.Text.Json.Nodes;
using PeftSharp.Chat;
using PeftSharp.Models;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Chat;

/// <summary>
/// A template whose end-of-turn token is not the model's EOS (ChatML's &lt;|im_end|&gt; with EOS &lt;|endoftext|&gt;, as
/// Llama-3.x's &lt;|eot_id|&gt; and Gemma's &lt;end_of_turn&gt;): a model trained on chat ends its reply with the
/// end-of-turn token, so exact match must accept it and serve's chat replies must stop on it, as generate --chat does.
/// </summary>
[Collection("console")]
public class ChatEndOfTurnTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Train_eval_and_serve_end_a_chat_reply_on_the_templates_end_of_turn_token()
    {
        string dir = TestPaths.TempDir();
        string model = ChatDemoModel.Build(Path.Combine(dir, "base"), endOfTurnIsEos: false);
        using var tok = TextTokenizer.FromFolder(model);
        int imEnd = tok.SpecialTokens["<|im_end|>"];
        Assert.DoesNotContain(imEnd, tok.StopIds(ModelConfig.Load(model)));   // the premise: <|im_end|> is not an EOS

        var line = JsonNode.Parse(File.ReadLines(Path.Combine(ChatDemoModel.DemoBase, "..", "train.jsonl")).First())!;
        string question = line["prompt"]!.GetValue<string>(), answer = line["completion"]!.GetValue<string>().Trim();
        string data = Path.Combine(dir, "chat.jsonl");
        File.WriteAllText(data, new JsonObject { ["messages"] = new JsonArray(
            new JsonObject { ["role"] = "user", ["content"] = question }, new JsonObject { ["role"] = "assistant", ["content"] = answer }) }.ToJsonString() + "\n");

        string run = Path.Combine(dir, "run");
        var (code, stdout, err) = CliCapture.Run("train", "--model", model, "--data", data, "--eval-file", data, "--method", "lora", "--rank", "8",
            "--steps", "30", "--batch", "1", "--lr", "0.01", "--warmup", "3", "--max-seq", "64", "--out", run);
        output.WriteLine(stdout + err);
        Assert.True(code == 0, err);
        // The reply is learned with its <|im_end|>; exact match counts it (it expected <|endoftext|> before).
        Assert.Contains("exact-match accuracy: before 0.0 %, after 100.0 %", stdout);
        string adapter = Path.Combine(run, "final");

        // `eval` on the same data says the same.
        var eval = CliCapture.Run("eval", "--model", model, "--adapter", adapter, "--data", data);
        output.WriteLine(eval.Out + eval.Err);
        Assert.True(eval.Code == 0, eval.Err);
        Assert.Matches(@"exact.match[^\n]*100\.0 %", eval.Out);

        // serve: the chat reply stops on <|im_end|> (finish "stop", the answer and nothing after it).
        using var lm = ModelLoader.Load(model);
        await using var server = await PeftServer.StartAsync(lm, tok, "chat-eot",
            new ServerOptions { Host = "127.0.0.1", Port = 0, Adapters = [("taught", adapter)], Chat = ChatPrompter.ForModel(model) }, new PeftAdapterLoader());
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        var response = await http.PostAsJsonAsync("v1/chat/completions", new JsonObject
        {
            ["model"] = "taught", ["max_tokens"] = 16, ["temperature"] = 0,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question }),
        });
        var body = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        output.WriteLine(body.ToJsonString());
        Assert.Equal(answer, body["choices"]![0]!["message"]!["content"]!.GetValue<string>().Trim());
        Assert.Equal("stop", body["choices"]![0]!["finish_reason"]!.GetValue<string>());
        Assert.Equal(tok.Encode(answer).Length + 1, body["usage"]!["completion_tokens"]!.GetValue<int>());
    }
}
