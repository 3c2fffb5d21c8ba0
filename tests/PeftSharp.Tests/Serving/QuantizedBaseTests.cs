using System.Text.Json.Nodes;
using PeftSharp.Cli;
using PeftSharp.Generation;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Serving;

[Collection("console")]
public class QuantizedBaseTests
{
    static string Nf4Folder()
    {
        string dir = Path.Combine(TestPaths.TempDir(), "nf4");
        var saved = Console.Out;
        Console.SetOut(new StringWriter());
        try { Assert.Equal(0, CliApp.Run(["quantize", "--model", TestPaths.TinyLlama, "--out", dir])); }
        finally { Console.SetOut(saved); }
        return dir;
    }

    static async Task<(PeftServer Server, HttpClient Http, CausalLM Model, TextTokenizer Tok)> Serve(string folder, LoadOptions load, ServerOptions options)
    {
        var model = ModelLoader.Load(folder, load);
        var tok = TextTokenizer.FromFolder(folder, model.Config);
        var server = await PeftServer.StartAsync(model, tok, "base", options with { Host = "127.0.0.1", Port = 0 }, new PeftAdapterLoader());
        return (server, new HttpClient { BaseAddress = server.BaseAddress }, model, tok);
    }

    static string Reference(string folder, LoadOptions load, string? adapter, string prompt, int max)
    {
        using var model = ModelLoader.Load(folder, load);
        using var tok = TextTokenizer.FromFolder(folder, model.Config);
        if (adapter is not null) PeftAdapterIO.Load(model, adapter, "ref");
        var stop = model.Config.EosTokenIds.ToHashSet();
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
        string dense = ServingHarness.SavedAdapter(Path.Combine(root, "dense"), seed: 2);   // recorded on the fp32 base
        var (server, http, model, tok) = await Serve(nf4, new LoadOptions(), new ServerOptions { AdapterRoot = root, Adapters = [("lora", ServingHarness.LoraFixture)] });
        try
        {
            Assert.NotEqual("none", model.QuantizationScheme);
            var models = JsonNode.Parse(await http.GetStringAsync("v1/models"))!["data"]!;
            Assert.Equal(model.QuantizationScheme, models[0]!["quantization"]!.GetValue<string>());
            var (status, body) = await Complete(http, "lora", "quantised", 12);
            Assert.Equal(200, status);
            Assert.Equal(Reference(nf4, new LoadOptions(), ServingHarness.LoraFixture, "quantised", 12), body["choices"]![0]!["text"]!.GetValue<string>());
            var load = new JsonObject { ["name"] = "dense", ["path"] = "dense" };
            using var resp = await http.PostAsync("v1/adapters", new StringContent(load.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
            Assert.Equal(409, (int)resp.StatusCode);
            string refusal = await resp.Content.ReadAsStringAsync();
            Assert.Contains("quantisation none", refusal);
            Assert.Contains("serve the dense base", refusal);
        }
        finally
        {
            http.Dispose();
            await server.DisposeAsync();
            tok.Dispose();
            model.Dispose();
        }
    }

    [Fact]
    public async Task DenseBaseRefusesAQloraAdapterAndSaysWhichBaseToServe()
    {
        string root = TestPaths.TempDir();
        string qlora = ServingHarness.SavedAdapter(Path.Combine(root, "qlora"), seed: 3, baseDir: Nf4Folder());   // recorded on the NF4 base
        var (server, http, model, tok) = await Serve(TestPaths.TinyLlama, new LoadOptions(), new ServerOptions { AdapterRoot = root });
        try
        {
            var load = new JsonObject { ["name"] = "qlora", ["path"] = "qlora" };
            using var resp = await http.PostAsync("v1/adapters", new StringContent(load.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
            Assert.Equal(409, (int)resp.StatusCode);
            string refusal = await resp.Content.ReadAsStringAsync();
            Assert.Contains("quantisation nf4", refusal);
            Assert.Contains("peft quantize", refusal);
        }
        finally
        {
            http.Dispose();
            await server.DisposeAsync();
            tok.Dispose();
            model.Dispose();
        }
    }

    [Fact]
    public async Task Bf16BaseServesLikeGeneratingAlone()
    {
        var load = new LoadOptions { Dtype = ScalarType.BFloat16 };
        var (server, http, model, tok) = await Serve(TestPaths.TinyLlama, load, new ServerOptions { Adapters = [("lora", ServingHarness.LoraFixture)] });
        try
        {
            var (status, body) = await Complete(http, "lora", "half precision", 12);
            Assert.Equal(200, status);
            Assert.Equal(Reference(TestPaths.TinyLlama, load, ServingHarness.LoraFixture, "half precision", 12), body["choices"]![0]!["text"]!.GetValue<string>());
        }
        finally
        {
            http.Dispose();
            await server.DisposeAsync();
            tok.Dispose();
            model.Dispose();
        }
    }
}
