using System.Net.Http.Json;
using System.Text.Json.Nodes;
using PeftSharp.Generation;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tests.Serving;

/// <summary>Starts a real server on 127.0.0.1 (free port) over the tiny-llama fixture (or another model folder) and talks HTTP to it.</summary>
public sealed class ServingHarness : IAsyncDisposable
{
    public CausalLM Model { get; }
    public TextTokenizer Tokenizer { get; }
    public PeftServer Server { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;
    /// <summary>What the server logged (the harness captures logs instead of writing them to the test console).</summary>
    public CapturedLogs Logs { get; } = new();

    ServingHarness(string modelDir)
    {
        Model = ModelLoader.Load(modelDir, new LoadOptions());
        Tokenizer = TextTokenizer.FromFolder(modelDir, Model.Config);
    }

    /// <param name="modelDir">The base model folder (default: the tiny-llama fixture).</param>
    /// <param name="servedName">The base's name in requests.</param>
    public static async Task<ServingHarness> Start(ServerOptions? options = null, string? modelDir = null, string servedName = "tiny-llama")
    {
        var h = new ServingHarness(modelDir ?? TestPaths.TinyLlama);
        h.Server = await PeftServer.StartAsync(h.Model, h.Tokenizer, servedName,
            (options ?? new()) with { Host = "127.0.0.1", Port = 0, LoggerProviders = [h.Logs] }, new PeftAdapterLoader());
        h.Http = new HttpClient { BaseAddress = h.Server.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        return h;
    }

    public static string LoraFixture => Path.Combine(TestPaths.TinyLlama, "adapters", "lora");
    public static string DoraFixture => Path.Combine(TestPaths.TinyLlama, "adapters", "dora");

    /// <summary>A random (non-zero B) LoRA adapter for the tiny-llama base, saved with its base fingerprint.</summary>
    public static string SavedAdapter(string dir, int seed, int rank = 4, string targets = "all-linear", string baseDir = "")
    {
        using var model = ModelLoader.Load(baseDir == "" ? TestPaths.TinyLlama : baseDir, new LoadOptions());
        LoraInjector.Inject(model, new LoraConfig { R = rank, LoraAlpha = 2 * rank, TargetModulesRegex = targets, InitLoraWeights = LoraInit.False }, "default", seed);
        PeftAdapterIO.Save(model, "default", dir);
        return dir;
    }

    /// <summary>What serving a request alone gives: TextGenerator on a fresh model with the adapter (if any), stop ids dropped.</summary>
    public static string Reference(string? adapterDir, int[] prompt, int maxTokens)
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama, new LoadOptions());
        using var tok = TextTokenizer.FromFolder(TestPaths.TinyLlama, model.Config);
        if (adapterDir is not null) PeftAdapterIO.Load(model, adapterDir, "ref");
        var stop = tok.StopIds(model.Config);
        var ids = TextGenerator.Generate(model, prompt, new SamplingOptions { MaxNewTokens = maxTokens }, stop).Where(i => !stop.Contains(i)).ToList();
        return tok.Decode(ids);
    }

    public int[] Encode(string text) => Tokenizer.Encode(text);

    public async Task<(int Status, JsonObject Body)> Post(string path, JsonObject body)
    {
        using var resp = await Http.PostAsync(path, new StringContent(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
        return ((int)resp.StatusCode, (JsonNode.Parse(await resp.Content.ReadAsStringAsync()) as JsonObject)!);
    }

    public async Task<string> CompletionText(string model, string prompt, int maxTokens)
    {
        var (status, body) = await Post("v1/completions", new JsonObject { ["model"] = model, ["prompt"] = prompt, ["max_tokens"] = maxTokens, ["temperature"] = 0 });
        Assert.True(status == 200, body.ToJsonString());
        return body["choices"]![0]!["text"]!.GetValue<string>();
    }

    /// <summary>Holds the batch worker between steps until the returned gate is released (to line requests up).</summary>
    public SemaphoreSlim HoldWorker()
    {
        var gate = new SemaphoreSlim(0);
        var entered = new ManualResetEventSlim();
        _ = Server.State.Scheduler.RunOnModelAsync(_ => { entered.Set(); gate.Wait(); return 0; });
        Assert.True(entered.Wait(TimeSpan.FromSeconds(30)), "the worker never ran the hold action");
        return gate;
    }

    public static async Task WaitUntil(Func<bool> condition, string what)
    {
        for (int i = 0; i < 600 && !condition(); i++) await Task.Delay(50);
        Assert.True(condition(), $"timed out waiting for {what}");
    }

    public async ValueTask DisposeAsync()
    {
        Http?.Dispose();
        if (Server is not null) await Server.DisposeAsync();
        Tokenizer.Dispose();
        Model.Dispose();
    }
}
