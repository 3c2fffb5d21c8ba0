using System.Text.Json.Nodes;
using PeftSharp.Hub;
using PeftSharp.Models;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;

namespace PeftSharp.Tests.IO.Gguf;

/// <summary>
/// `serve --model FILE.gguf`, as ServeCommand does it (the --model value resolved, model and tokenizer loaded from the
/// folder it names): the real TinyStories GGUF serves the completions its HF folder serves, under the file's name.
/// </summary>
public class GgufBaseServeTests(ITestOutputHelper output)
{
    static async Task<(string Id, string Text)> Serve(string modelValue, string prompt)
    {
        string dir = ModelLocation.Resolve(modelValue, "--model");
        using var model = ModelLoader.Load(dir);
        using var tok = TextTokenizer.FromFolder(dir, model.Config);
        string id = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)));
        await using var peft = await PeftServer.StartAsync(model, tok, id, new ServerOptions { Host = "127.0.0.1", Port = 0 }, new PeftAdapterLoader());
        using var http = new HttpClient { BaseAddress = peft.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        var body = new JsonObject { ["model"] = id, ["prompt"] = prompt, ["max_tokens"] = 24, ["temperature"] = 0 };
        using var resp = await http.PostAsync("v1/completions", new StringContent(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
        var json = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!.AsObject();
        Assert.True(resp.IsSuccessStatusCode, json.ToJsonString());
        return (id, json["choices"]![0]!["text"]!.GetValue<string>());
    }

    [Fact]
    public async Task ServingTheGguf_GivesTheHfFolderCompletions()
    {
        if (RealFixtures.Folder("tinystories-260k", output) is not { } root) return;
        var (id, fromGguf) = await Serve(Path.Combine(root, "raw", "stories260K.gguf"), "Lily and Tom");
        var (_, fromHf) = await Serve(Path.Combine(root, "hf"), "Lily and Tom");
        Assert.Equal("stories260K", id);
        Assert.Equal(fromHf, fromGguf);
        Assert.StartsWith(" were playing", fromGguf);
    }
}
