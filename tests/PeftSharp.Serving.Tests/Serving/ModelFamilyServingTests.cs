using System.Text.Json.Nodes;
using PeftSharp.Generation;
using PeftSharp.Models;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;
using PeftSharp.Tests.Support;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// `serve` on the new families with sliding windows: requests of different lengths, past the window, batched
/// together (left padding, rows joining and leaving) answer what generating each alone answers.
/// </summary>
[Collection("console")]
public class ModelFamilyServingTests
{
    [Theory]
    [InlineData("gemma2")]
    [InlineData("phi3")]
    public async Task Batched_windowed_rows_equal_generating_each_alone(string family)
    {
        // Phi-3 without longrope: transformers picks longrope's factors by the largest position in the whole batch,
        // so a short row batched with a long one rightly differs from the same row alone.
        var cfg = family == "gemma2" ? RandomModel.Gemma2Config(layers: 2, window: 6) : RandomModel.Phi3Config();
        if (family == "phi3") cfg["sliding_window"] = 6;
        cfg["vocab_size"] = 260;
        cfg["eos_token_id"] = 259;
        string dir = RandomModel.Write(cfg, seed: 5);
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));

        using var model = ModelLoader.Load(dir);
        using var tokenizer = TextTokenizer.FromFolder(dir, model.Config);
        var cases = new (string Prompt, int Max)[] { ("a much longer prompt than the window", 9), ("hi", 14), ("medium prompt", 4) };
        var expected = cases.Select(c =>
        {
            var stop = tokenizer.StopIds(model.Config);
            var ids = TextGenerator.Generate(model, tokenizer.Encode(c.Prompt), new SamplingOptions { MaxNewTokens = c.Max }, stop).Where(i => !stop.Contains(i)).ToList();
            return tokenizer.Decode(ids);
        }).ToList();

        await using var server = await PeftServer.StartAsync(model, tokenizer, family, new ServerOptions { Host = "127.0.0.1", Port = 0 }, new PeftAdapterLoader());
        using var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        var gate = new SemaphoreSlim(0);
        var entered = new ManualResetEventSlim();
        _ = server.State.Scheduler.RunOnModelAsync(_ => { entered.Set(); gate.Wait(); return 0; });
        Assert.True(entered.Wait(TimeSpan.FromSeconds(30)));
        var tasks = cases.Select(async c =>
        {
            var body = new JsonObject { ["model"] = family, ["prompt"] = c.Prompt, ["max_tokens"] = c.Max, ["temperature"] = 0 };
            using var resp = await http.PostAsync("v1/completions", new StringContent(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
            var json = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!;
            Assert.True(resp.IsSuccessStatusCode, json.ToJsonString());
            return json["choices"]![0]!["text"]!.GetValue<string>();
        }).ToList();
        for (int i = 0; i < 600 && server.State.Scheduler.QueuedJobs < cases.Length; i++) await Task.Delay(50);
        gate.Release();
        var texts = await Task.WhenAll(tasks);
        Assert.Equal(expected, texts);
    }

    [Fact]
    public async Task Phi3_longrope_rows_crossing_the_switch_equal_generate()
    {
        // original_max_position_embeddings 8, prompts of 4 ids, 14 new tokens: every row passes the switch to the long
        // factors mid-generation, where generate (as transformers) recomputes the whole sequence. Two rows of the same
        // length batched together cross at the same step (the factors are chosen by the batch's largest position, as
        // transformers does, so rows crossing at different steps would rightly differ from generating alone).
        var cfg = RandomModel.Phi3Config(longRope: true, originalMax: 8);
        cfg["vocab_size"] = 260;
        cfg["eos_token_id"] = 259;
        string dir = RandomModel.Write(cfg, seed: 2);
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        using var model = ModelLoader.Load(dir);
        using var tokenizer = TextTokenizer.FromFolder(dir, model.Config);
        int[][] prompts = [[3, 17, 42, 8], [5, 99, 7, 120]];
        const int max = 14;
        var expected = prompts.Select(p => TextGenerator.Generate(model, p, new SamplingOptions { MaxNewTokens = max }, []).ToList()).ToList();
        Assert.All(expected, e => Assert.Equal(max, e.Count));

        await using var server = await PeftServer.StartAsync(model, tokenizer, "phi3", new ServerOptions { Host = "127.0.0.1", Port = 0 }, new PeftAdapterLoader());
        using var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        async Task<(string Text, int Tokens)> Complete(int[] prompt)
        {
            var body = new JsonObject { ["model"] = "phi3", ["prompt"] = new JsonArray(prompt.Select(i => (JsonNode)i).ToArray()), ["max_tokens"] = max, ["temperature"] = 0 };
            using var resp = await http.PostAsync("v1/completions", new StringContent(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
            var json = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!;
            Assert.True(resp.IsSuccessStatusCode, json.ToJsonString());
            return (json["choices"]![0]!["text"]!.GetValue<string>(), json["usage"]!["completion_tokens"]!.GetValue<int>());
        }
        // Stop ids (the tokenizer's and eos 259) would end a row early; none was generated here, so the texts compare whole.
        var stop = tokenizer.StopIds(model.Config);
        Assert.All(expected, e => Assert.DoesNotContain(e, stop.Contains));
        var alone = await Complete(prompts[0]);
        Assert.Equal((tokenizer.Decode(expected[0]), max), alone);

        var gate = new SemaphoreSlim(0);
        var entered = new ManualResetEventSlim();
        _ = server.State.Scheduler.RunOnModelAsync(_ => { entered.Set(); gate.Wait(); return 0; });
        Assert.True(entered.Wait(TimeSpan.FromSeconds(30)));
        var tasks = prompts.Select(Complete).ToList();
        for (int i = 0; i < 600 && server.State.Scheduler.QueuedJobs < prompts.Length; i++) await Task.Delay(50);
        gate.Release();
        var batched = await Task.WhenAll(tasks);
        Assert.Equal(expected.Select(e => (tokenizer.Decode(e), max)), batched);
    }
}
