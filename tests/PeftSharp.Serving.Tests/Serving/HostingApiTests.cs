using System.Net.Http.Json;
using System.Text.Json.Nodes;
using PeftSharp.Serving;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;
using PeftSharp.Models;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// The public way an app hosts the server (src/PeftSharp.Serving/README.md, "From .NET"): a model folder, options and
/// the PEFT adapter loader, nothing internal. The CLI and the other tests start from an already loaded model.
/// </summary>
public class HostingApiTests
{
    [Fact]
    public async Task AModelFolderIsServedUnderItsNameWithItsStartupAdapters()
    {
        await using var server = await PeftServer.StartAsync(TestPaths.TinyLlama,
            new ServerOptions { Port = 0, Adapters = [("tuned", ServingHarness.LoraFixture)], LoggerProviders = [new CapturedLogs()] },
            new PeftAdapterLoader());
        using var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };

        var models = (await http.GetFromJsonAsync<JsonObject>("v1/models"))!["data"]!.AsArray().Select(m => m!["id"]!.GetValue<string>());
        Assert.Equal(["tiny-llama", "tuned"], models.Order());

        int[] prompt = [1, 104, 101, 108, 108, 111];   // ids under the fixture's vocabulary of 260
        // The adapter changes this prompt's greedy text, so the per-model comparison below tells base and adapter apart.
        Assert.NotEqual(ServingHarness.Reference(null, prompt, 6), ServingHarness.Reference(ServingHarness.LoraFixture, prompt, 6));
        foreach (var (model, adapter) in new[] { ("tiny-llama", null), ("tuned", ServingHarness.LoraFixture) })
        {
            using var resp = await http.PostAsJsonAsync("v1/completions", new { model, prompt, max_tokens = 6, temperature = 0 });
            var body = (await resp.Content.ReadFromJsonAsync<JsonObject>())!;
            Assert.True(resp.IsSuccessStatusCode, body.ToJsonString());
            Assert.Equal(ServingHarness.Reference(adapter, prompt, 6), body["choices"]![0]!["text"]!.GetValue<string>());
        }
    }

    [Fact]
    public async Task AStartupAdapterThatCannotLoadFailsTheStartNamingIt()
    {
        string missing = Path.Combine(TestPaths.RunRoot, "no-such-adapter");
        var e = await Assert.ThrowsAsync<ServingException>(() => PeftServer.StartAsync(TestPaths.TinyLlama,
            new ServerOptions { Port = 0, Adapters = [("gone", missing)], LoggerProviders = [new CapturedLogs()] }, new PeftAdapterLoader()));
        Assert.Equal(404, e.Status);
        Assert.Contains(missing, e.Message);
    }
    [Fact]
    public async Task APissaAdapterIsRefusedNotLoadedOverTheSharedBase()
    {
        // PiSSA rewrites the base weights it adapts to their residual: loaded into a server, it would change the base
        // model's answers (and every other adapter's) silently.
        string dir = Path.Combine(TestPaths.RunRoot, $"pissa-{Guid.NewGuid():N}");
        using (var model = PeftModel.FromPretrained(TestPaths.TinyLlama))
        {
            model.AddAdapter("p", new LoraConfig { R = 2, TargetModules = ["q_proj"], InitLoraWeights = LoraInit.Pissa });
            model.SaveAdapter("p", dir);
        }
        var e = await Assert.ThrowsAsync<ServingException>(() => PeftServer.StartAsync(TestPaths.TinyLlama,
            new ServerOptions { Port = 0, Adapters = [("pissa", dir)], LoggerProviders = [new CapturedLogs()] }, new PeftAdapterLoader()));
        Assert.Equal(400, e.Status);
        Assert.Contains("PiSSA", e.Message);
    }

    [Fact]
    public async Task AModelFolderIsServedWithItsOwnChatTemplate()
    {
        // A copy of the fixture with a chat template of its own (as transformers 4.47+ saves it): chat requests must be
        // rendered with it, not with PeftSharp's simple format, when the app sets no ServerOptions.Chat.
        string dir = Path.Combine(TestPaths.RunRoot, $"templated-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(TestPaths.TinyLlama)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        File.WriteAllText(Path.Combine(dir, "chat_template.jinja"), "{% for m in messages %}[{{ m.role }}: {{ m.content }}]{% endfor %}{% if add_generation_prompt %}=>{% endif %}");
        await using var server = await PeftServer.StartAsync(dir, new ServerOptions { Port = 0, LoggerProviders = [new CapturedLogs()] }, new PeftAdapterLoader());
        using var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        using var tok = TextTokenizer.Load(dir);

        using var resp = await http.PostAsJsonAsync("v1/chat/completions", new { model = Path.GetFileName(dir), messages = new[] { new { role = "user", content = "hi" } }, max_tokens = 1, temperature = 0 });
        var body = (await resp.Content.ReadFromJsonAsync<JsonObject>())!;
        Assert.True(resp.IsSuccessStatusCode, body.ToJsonString());
        int templated = tok.Encode("[user: hi]=>").Length;
        Assert.NotEqual(tok.Encode(PeftSharp.Data.ChatFormat.Render([("user", "hi")], addGenerationPrompt: true)).Length, templated);
        Assert.Equal(templated, body["usage"]!["prompt_tokens"]!.GetValue<int>());
    }
}
