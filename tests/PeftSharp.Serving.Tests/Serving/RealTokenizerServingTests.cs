using System.Text.Json.Nodes;
using PeftSharp.Generation;
using PeftSharp.Models;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// `serve` completions on a real model and tokenizer (TinyStories, skipped with a printed reason when absent): the
/// prompt gets HF's BOS, the text keeps its first space and equals what streaming sends, ids are used as given, and
/// top_k / repetition_penalty / generation_config.json defaults act as in `generate`.
/// </summary>
public class RealTokenizerServingTests(ITestOutputHelper output)
{
    sealed class Server : IAsyncDisposable
    {
        public required CausalLM Model { get; init; }
        public required TextTokenizer Tokenizer { get; init; }
        public required PeftServer Peft { get; init; }
        public required HttpClient Http { get; init; }

        public static async Task<Server> Start(string dir)
        {
            var model = ModelLoader.Load(dir);
            var tok = TextTokenizer.FromFolder(dir, model.Config);
            var peft = await PeftServer.StartAsync(model, tok, "tinystories", new ServerOptions { Host = "127.0.0.1", Port = 0 }, new PeftAdapterLoader());
            return new Server { Model = model, Tokenizer = tok, Peft = peft, Http = new HttpClient { BaseAddress = peft.BaseAddress, Timeout = TimeSpan.FromSeconds(60) } };
        }

        /// <summary>decode(prompt + generated) minus decode(prompt) for TextGenerator's ids, as serving alone should give.</summary>
        public string Reference(int[] prompt, SamplingOptions o)
        {
            var stop = Tokenizer.StopIds(Model.Config);
            var ids = TextGenerator.Generate(Model, prompt, o, stop).Where(i => !stop.Contains(i)).ToList();
            return Tokenizer.Decode([.. prompt, .. ids])[Tokenizer.Decode(prompt).Length..];
        }

        public async Task<JsonObject> Complete(JsonObject body)
        {
            using var resp = await Http.PostAsync("v1/completions", new StringContent(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
            var json = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!.AsObject();
            Assert.True(resp.IsSuccessStatusCode, json.ToJsonString());
            return json;
        }

        public async ValueTask DisposeAsync()
        {
            Http.Dispose();
            await Peft.DisposeAsync();
            Tokenizer.Dispose();
            Model.Dispose();
        }
    }

    static string Text(JsonObject o) => o["choices"]![0]!["text"]!.GetValue<string>();

    [Fact]
    public async Task CompletionsStartFromBosKeepTheFirstSpaceAndStreamTheSameText()
    {
        if (RealFixtures.Folder("tinystories-260k/hf", output) is not { } dir) return;
        await using var s = await Server.Start(dir);
        int[] prompt = s.Tokenizer.Encode("Lily and Tom", addSpecialTokens: true);
        string expected = s.Reference(prompt, new SamplingOptions { MaxNewTokens = 20 });
        var whole = await s.Complete(new JsonObject { ["prompt"] = "Lily and Tom", ["max_tokens"] = 20, ["temperature"] = 0 });
        Assert.Equal(expected, Text(whole));
        Assert.StartsWith(" were playing", Text(whole));
        Assert.Equal(prompt.Length, whole["usage"]!["prompt_tokens"]!.GetValue<int>());
        var events = await Sse.Read(s.Http, "v1/completions", new JsonObject { ["prompt"] = "Lily and Tom", ["max_tokens"] = 20, ["temperature"] = 0, ["stream"] = true });
        Assert.Equal(expected, string.Concat(events.SkipLast(1).Select(e => JsonNode.Parse(e)!["choices"]![0]!["text"]!.GetValue<string>())));
        // An empty prompt is BOS alone; ids are used as given (no BOS added).
        Assert.Equal(s.Reference([1], new SamplingOptions { MaxNewTokens = 10 }), Text(await s.Complete(new JsonObject { ["prompt"] = "", ["max_tokens"] = 10, ["temperature"] = 0 })));
        int[] bare = s.Tokenizer.Encode("Lily and Tom");
        var byIds = await s.Complete(new JsonObject { ["prompt"] = new JsonArray([.. bare.Select(i => (JsonNode)i)]), ["max_tokens"] = 8, ["temperature"] = 0 });
        Assert.Equal(bare.Length, byIds["usage"]!["prompt_tokens"]!.GetValue<int>());
        Assert.Equal(s.Reference(bare, new SamplingOptions { MaxNewTokens = 8 }), Text(byIds));
    }

    [Fact]
    public async Task TopKAndRepetitionPenaltyActAsInGenerate()
    {
        if (RealFixtures.Folder("tinystories-260k/hf", output) is not { } dir) return;
        await using var s = await Server.Start(dir);
        int[] prompt = s.Tokenizer.Encode("The cat", addSpecialTokens: true);
        string greedy = s.Reference(prompt, new SamplingOptions { MaxNewTokens = 30 });
        for (int seed = 0; seed < 3; seed++)
            Assert.Equal(greedy, Text(await s.Complete(new JsonObject { ["prompt"] = "The cat", ["max_tokens"] = 30, ["temperature"] = 1.5, ["top_k"] = 1, ["seed"] = seed })));
        string penalised = s.Reference(prompt, new SamplingOptions { MaxNewTokens = 30, RepetitionPenalty = 1.5 });
        Assert.NotEqual(greedy, penalised);
        Assert.Equal(penalised, Text(await s.Complete(new JsonObject { ["prompt"] = "The cat", ["max_tokens"] = 30, ["temperature"] = 0, ["repetition_penalty"] = 1.5 })));
    }

    [Fact]
    public async Task GenerationConfigSuppliesWhatTheRequestLeavesOut()
    {
        if (RealFixtures.Folder("tinystories-260k/hf", output) is not { } src) return;
        string dir = TestPaths.TempDir();
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        File.WriteAllText(Path.Combine(dir, GenerationConfig.FileName), """{"eos_token_id":2,"do_sample":false,"max_new_tokens":7}""");
        await using var s = await Server.Start(dir);
        int[] prompt = s.Tokenizer.Encode("Lily", addSpecialTokens: true);
        // No temperature (OpenAI's default would sample at 1) and no max_tokens: greedy for 7 tokens, from the file.
        var r = await s.Complete(new JsonObject { ["prompt"] = "Lily" });
        Assert.Equal(s.Reference(prompt, new SamplingOptions { MaxNewTokens = 7 }), Text(r));
        Assert.Equal(7, r["usage"]!["completion_tokens"]!.GetValue<int>());
    }
}
