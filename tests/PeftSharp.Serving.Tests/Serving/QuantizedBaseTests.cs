using System.Text.Json.Nodes;
using PeftSharp.Generation;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Serving;

[Collection("console")]
public class QuantizedBaseTests
{
    static string Nf4Folder()
    {
        string dir = Path.Combine(TestPaths.TempDir(), "nf4");
        Assert.Equal(0, CliCapture.Run("quantize", "--model", TestPaths.TinyLlama, "--out", dir).Code);
        return dir;
    }

    /// <summary>A server over one base folder, and the client talking to it; disposing stops and frees both.</summary>
    sealed record Served(PeftServer Server, HttpClient Http, CausalLM Model, TextTokenizer Tok) : IAsyncDisposable
    {
        public async Task<(int Status, string Body)> LoadAdapter(string name, string path)
        {
            var load = new JsonObject { ["name"] = name, ["path"] = path };
            using var resp = await Http.PostAsync("v1/adapters", new StringContent(load.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
            return ((int)resp.StatusCode, await resp.Content.ReadAsStringAsync());
        }

        public async ValueTask DisposeAsync()
        {
            Http.Dispose();
            await Server.DisposeAsync();
            Tok.Dispose();
            Model.Dispose();
        }
    }

    static async Task<Served> Serve(string folder, LoadOptions load, ServerOptions options)
    {
        var model = ModelLoader.Load(folder, load);
        var tok = TextTokenizer.FromFolder(folder, model.Config);
        var server = await PeftServer.StartAsync(model, tok, "base", options with { Host = "127.0.0.1", Port = 0 }, new PeftAdapterLoader());
        return new Served(server, new HttpClient { BaseAddress = server.BaseAddress }, model, tok);
    }

    static string Reference(string folder, LoadOptions load, string? adapter, string prompt, int max)
    {
        using var model = ModelLoader.Load(folder, load);
        using var tok = TextTokenizer.FromFolder(folder, model.Config);
        if (adapter is not null) PeftAdapterIO.Load(model, adapter, "ref");
        var stop = tok.StopIds(model.Config);
        return tok.Decode(TextGenerator.Generate(model, tok.Encode(prompt), new SamplingOptions { MaxNewTokens = max }, stop).Where(i => !stop.Contains(i)).ToList());
    }

    static async Task<(int, JsonObject)> Complete(HttpClient http, string model, string prompt, int max)
    {
        var body = new JsonObject { ["model"] = model, ["prompt"] = prompt, ["max_tokens"] = max, ["temperature"] = 0 };
        using var resp = await http.PostAsync("v1/completions", new StringContent(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
        return ((int)resp.StatusCode, (JsonObject)JsonNode.Parse(await resp.Content.ReadAsStringAsync())!);
    }

    [Fact]
    public async Task Nf4BaseServesLikeGeneratingAloneAndRefusesDenseBaseAdapters()
    {
        string nf4 = Nf4Folder();
        string root = TestPaths.TempDir();
        ServingHarness.SavedAdapter(Path.Combine(root, "dense"), seed: 2);   // recorded on the fp32 base
        await using var s = await Serve(nf4, new LoadOptions(), new ServerOptions { AdapterRoot = root, Adapters = [("lora", ServingHarness.LoraFixture)] });
        Assert.NotEqual("none", s.Model.QuantizationScheme);
        var models = JsonNode.Parse(await s.Http.GetStringAsync("v1/models"))!["data"]!;
        Assert.Equal(s.Model.QuantizationScheme, models[0]!["quantization"]!.GetValue<string>());
        var (status, body) = await Complete(s.Http, "lora", "quantised", 12);
        Assert.Equal(200, status);
        Assert.Equal(Reference(nf4, new LoadOptions(), ServingHarness.LoraFixture, "quantised", 12), body["choices"]![0]!["text"]!.GetValue<string>());
        var (refused, refusal) = await s.LoadAdapter("dense", "dense");
        Assert.Equal(409, refused);
        Assert.Contains("quantisation none", refusal);
        Assert.Contains("serve the dense base", refusal);
    }

    [Fact]
    public async Task DenseBaseRefusesAQloraAdapterAndSaysWhichBaseToServe()
    {
        string root = TestPaths.TempDir();
        ServingHarness.SavedAdapter(Path.Combine(root, "qlora"), seed: 3, baseDir: Nf4Folder());   // recorded on the NF4 base
        await using var s = await Serve(TestPaths.TinyLlama, new LoadOptions(), new ServerOptions { AdapterRoot = root });
        var (refused, refusal) = await s.LoadAdapter("qlora", "qlora");
        Assert.Equal(409, refused);
        Assert.Contains("quantisation nf4", refusal);
        Assert.Contains("peft quantize", refusal);
    }

    [Fact]
    public async Task Bf16BaseServesLikeGeneratingAlone()
    {
        var load = new LoadOptions { Dtype = ScalarType.BFloat16 };
        await using var s = await Serve(TestPaths.TinyLlama, load, new ServerOptions { Adapters = [("lora", ServingHarness.LoraFixture)] });
        var (status, body) = await Complete(s.Http, "lora", "half precision", 12);
        Assert.Equal(200, status);
        Assert.Equal(Reference(TestPaths.TinyLlama, load, ServingHarness.LoraFixture, "half precision", 12), body["choices"]![0]!["text"]!.GetValue<string>());
    }
}
