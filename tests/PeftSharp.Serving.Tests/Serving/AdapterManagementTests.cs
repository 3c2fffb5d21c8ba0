using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;
using PeftSharp.Tests.Support;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tests.Serving;

public class AdapterManagementTests
{
    /// <summary>An adapter root holding two saved adapters (a, b) with recorded fingerprints.</summary>
    static (string Root, string A, string B) Root()
    {
        string root = TestPaths.TempDir();
        return (root, ServingHarness.SavedAdapter(Path.Combine(root, "a"), seed: 11), ServingHarness.SavedAdapter(Path.Combine(root, "b"), seed: 12, rank: 2));
    }

    static JsonObject LoadBody(string name, string path) => new() { ["name"] = name, ["path"] = path };

    [Fact]
    public async Task ModelsListsBaseAndAdaptersWithHashFingerprintAndRank()
    {
        var (root, a, _) = Root();
        await using var h = await ServingHarness.Start(new ServerOptions { Adapters = [("a", a), ("lora", ServingHarness.LoraFixture)], AdapterRoot = root });
        var body = JsonNode.Parse(await h.Http.GetStringAsync("v1/models"))!;
        var data = body["data"]!.AsArray();
        Assert.Equal(["tiny-llama", "a", "lora"], data.Select(d => d!["id"]!.GetValue<string>()));
        Assert.Equal(64, data[0]!["base_fingerprint"]!.GetValue<string>().Length);
        var recorded = JsonNode.Parse(File.ReadAllText(Path.Combine(a, "peftsharp_adapter.json")))!["base_fingerprint"]!["digest"]!.GetValue<string>();
        Assert.Equal(recorded, data[1]!["base_fingerprint"]!.GetValue<string>());
        Assert.Null(data[2]!["base_fingerprint"]);                                 // PEFT-made fixture records none
        Assert.Equal(4, data[1]!["rank"]!.GetValue<int>());
        Assert.Equal(AdapterPaths.ContentHash(a), data[1]!["content_hash"]!.GetValue<string>());
        Assert.StartsWith("sha256:", data[2]!["content_hash"]!.GetValue<string>());
    }

    [Fact]
    public async Task LoadServeUnloadAtRunTime()
    {
        var (root, a, _) = Root();
        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root });
        var (status, _) = await h.Post("v1/completions", new JsonObject { ["model"] = "a", ["prompt"] = "x", ["max_tokens"] = 3 });
        Assert.Equal(404, status);
        (status, var loaded) = await h.Post("v1/adapters", LoadBody("a", "a"));
        Assert.Equal(200, status);
        Assert.Equal(1, loaded["version"]!.GetValue<int>());
        Assert.Equal(ServingHarness.Reference(a, h.Encode("hello"), 10), await h.CompletionText("a", "hello", 10));
        using var del = await h.Http.DeleteAsync("v1/adapters/a");
        Assert.Equal(HttpStatusCode.OK, del.StatusCode);
        (status, _) = await h.Post("v1/completions", new JsonObject { ["model"] = "a", ["prompt"] = "x", ["max_tokens"] = 3 });
        Assert.Equal(404, status);
        await ServingHarness.WaitUntil(() => LoraModel.Of(h.Model).Adapters.Count == 0, "the adapter to leave the model");
        using var again = await h.Http.DeleteAsync("v1/adapters/a");
        Assert.Equal(HttpStatusCode.NotFound, again.StatusCode);
    }

    [Fact]
    public async Task ReplacingIsAtomicAndInFlightRequestsFinishOnTheOldVersion()
    {
        var (root, a, b) = Root();
        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root, Adapters = [("x", a)] });
        // The request leases x@v1 and waits in the queue; the replacement is loaded before the request is admitted
        // (the worker runs queued model actions before it admits requests, so the gate opens only once the load waits).
        var gate = h.HoldWorker();
        var inFlight = h.CompletionText("x", "replace me", 12);
        await ServingHarness.WaitUntil(() => h.Server.State.Scheduler.QueuedJobs == 1, "the request to queue");
        var replace = h.Post("v1/adapters", LoadBody("x", "b"));
        await ServingHarness.WaitUntil(() => h.Server.State.Scheduler.QueuedActions == 1, "the replacement to wait for the worker");
        gate.Release();
        await AssertReplacedWhileInFlight(h, replace, inFlight, a, b);
    }

    [Fact]
    public async Task ReplacingWhileARowDecodesLeavesTheRowOnItsVersion()
    {
        var (root, a, b) = Root();
        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root, Adapters = [("x", a)] });
        // The worker stops after the row's first decode step (2 of its 12 tokens), the replacement is loaded between
        // two of its steps, and the row goes on with x@v1.
        var gate = new SemaphoreSlim(0);
        var held = new ManualResetEventSlim();
        h.Server.State.Scheduler.AfterStep = () =>
        {
            if (h.Server.State.Scheduler.TokensGenerated < 2 || held.IsSet) return;
            held.Set();
            gate.Wait();
        };
        var inFlight = h.CompletionText("x", "replace me", 12);
        await ServingHarness.WaitUntil(() => held.IsSet, "the row's first decode step");
        var replace = h.Post("v1/adapters", LoadBody("x", "b"));
        await ServingHarness.WaitUntil(() => h.Server.State.Scheduler.QueuedActions == 1, "the replacement to wait for the worker");
        gate.Release();
        await AssertReplacedWhileInFlight(h, replace, inFlight, a, b);
    }

    /// <summary>The replacement is x@v2, the request that leased x@v1 answers as x@v1 alone, the next one as x@v2, and
    /// x@v1 leaves the model once its request is done.</summary>
    static async Task AssertReplacedWhileInFlight(ServingHarness h, Task<(int Status, JsonObject Body)> replace, Task<string> inFlight, string a, string b)
    {
        var (status, v2) = await replace;
        Assert.Equal(200, status);
        Assert.Equal(2, v2["version"]!.GetValue<int>());
        Assert.Equal(ServingHarness.Reference(a, h.Encode("replace me"), 12), await inFlight);
        Assert.Equal(ServingHarness.Reference(b, h.Encode("replace me"), 12), await h.CompletionText("x", "replace me", 12));
        // Retired when the request's lease is released (after its response is written); the model is read on the
        // worker, after the unload that retiring queued, not from this thread while the worker changes it.
        await ServingHarness.WaitUntil(() => h.Server.State.Adapters.ResidentCount == 1, "x@v1 to be retired");
        Assert.Equal(["x@v2"], await h.Server.State.Scheduler.RunOnModelAsync(m => LoraModel.Of(m).Adapters.Keys.ToList()));
    }

    [Fact]
    public async Task RuntimeLoadingStaysInsideTheRoot()
    {
        var (root, _, _) = Root();
        string outside = ServingHarness.SavedAdapter(Path.Combine(TestPaths.TempDir(), "out"), seed: 5);
        File.CreateSymbolicLink(Path.Combine(root, "escape"), outside);
        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root });
        Assert.Equal(403, (await h.Post("v1/adapters", LoadBody("e", "../" + Path.GetFileName(Path.GetDirectoryName(outside)!) + "/out"))).Status);
        Assert.Equal(403, (await h.Post("v1/adapters", LoadBody("e", outside))).Status);
        var (status, body) = await h.Post("v1/adapters", LoadBody("e", "escape"));
        Assert.Equal(403, status);
        Assert.Contains("outside the adapter root", body["error"]!["message"]!.GetValue<string>());
        Assert.Equal(404, (await h.Post("v1/adapters", LoadBody("e", "missing"))).Status);
        Assert.Equal(400, (await h.Post("v1/adapters", LoadBody("bad/name", "a"))).Status);
        Assert.Equal(400, (await h.Post("v1/adapters", new JsonObject { ["name"] = "a" })).Status);
        Assert.Equal(200, (await h.Post("v1/adapters", LoadBody("a", Path.Combine(root, "a")))).Status);
    }

    [Fact]
    public async Task WithoutARootRuntimeLoadingIsOff()
    {
        var (_, a, _) = Root();
        await using var h = await ServingHarness.Start();
        var (status, body) = await h.Post("v1/adapters", LoadBody("a", a));
        Assert.Equal(403, status);
        Assert.Contains("--adapter-root", body["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task ApiKeyIsRequiredWhenSet()
    {
        var (root, _, _) = Root();
        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root, ApiKey = "s3cret" });
        Assert.Equal(401, (await h.Post("v1/adapters", LoadBody("a", "a"))).Status);
        using (var del = await h.Http.DeleteAsync("v1/adapters/a")) Assert.Equal(HttpStatusCode.Unauthorized, del.StatusCode);
        h.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "wrong");
        Assert.Equal(401, (await h.Post("v1/adapters", LoadBody("a", "a"))).Status);
        h.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "s3cret");
        Assert.Equal(200, (await h.Post("v1/adapters", LoadBody("a", "a"))).Status);
        using (var del = await h.Http.DeleteAsync("v1/adapters/a")) Assert.Equal(HttpStatusCode.OK, del.StatusCode);
    }

    [Fact]
    public async Task AdaptersForAnotherBaseOrTargetingNothingAreRefusedWith409()
    {
        string root = TestPaths.TempDir();
        // Same architecture, different weights: the recorded fingerprint names the differing tensors.
        string otherBase = RandomModel.Write(RandomModel.LlamaConfig(hidden: 64, layers: 2, heads: 4, kvHeads: 2, vocab: 260, intermediate: 176), seed: 9);
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(otherBase, "tokenizer.json"));
        ServingHarness.SavedAdapter(Path.Combine(root, "drift"), seed: 1, baseDir: otherBase);
        string none = Path.Combine(root, "none");
        Directory.CreateDirectory(none);
        File.WriteAllText(Path.Combine(none, "adapter_config.json"), new JsonObject
        {
            ["peft_type"] = "LORA", ["r"] = 2, ["lora_alpha"] = 2, ["target_modules"] = new JsonArray("not_a_module"),
        }.ToJsonString());
        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root });
        var (status, body) = await h.Post("v1/adapters", LoadBody("drift", "drift"));
        Assert.Equal(409, status);
        string msg = body["error"]!["message"]!.GetValue<string>();
        Assert.Contains("model.layers.0.self_attn.q_proj.weight differs", msg);
        (status, body) = await h.Post("v1/adapters", LoadBody("none", "none"));
        Assert.Equal(409, status);
        Assert.Contains("matched no module", body["error"]!["message"]!.GetValue<string>());
        // Nothing was left on the model and neither name serves.
        Assert.Empty(LoraModel.Of(h.Model).Adapters);
        Assert.Equal(404, (await h.Post("v1/completions", new JsonObject { ["model"] = "drift", ["prompt"] = "x" })).Status);
    }

    [Fact]
    public async Task LeastRecentlyUsedAdapterIsEvictedAndReloadedOnDemand()
    {
        var (root, a, b) = Root();
        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root, MaxAdapters = 1, Adapters = [("a", a), ("b", b)] });
        Assert.Equal(1, h.Server.State.Adapters.ResidentCount);
        Assert.Equal(ServingHarness.Reference(a, h.Encode("lru"), 8), await h.CompletionText("a", "lru", 8));   // reloads a, evicts b
        Assert.Equal(ServingHarness.Reference(b, h.Encode("lru"), 8), await h.CompletionText("b", "lru", 8));   // and back
        await ServingHarness.WaitUntil(() => LoraModel.Of(h.Model).Adapters.Count == 1, "one resident adapter");
        var data = JsonNode.Parse(await h.Http.GetStringAsync("v1/models"))!["data"]!.AsArray();
        Assert.False(data.First(d => d!["id"]!.GetValue<string>() == "a")!["resident"]!.GetValue<bool>());
        Assert.True(data.First(d => d!["id"]!.GetValue<string>() == "b")!["resident"]!.GetValue<bool>());
    }

    [Fact]
    public async Task AnAdapterChangedOnDiskForAnotherBaseIsRefusedOnReload()
    {
        var (root, a, b) = Root();
        await using var h = await ServingHarness.Start(new ServerOptions { AdapterRoot = root, MaxAdapters = 1, Adapters = [("a", a), ("b", b)] });
        // a was evicted; its folder now holds an adapter for another base: the request must not run on it.
        string otherBase = RandomModel.Write(RandomModel.LlamaConfig(hidden: 64, layers: 2, heads: 4, kvHeads: 2, vocab: 260, intermediate: 176), seed: 4);
        Directory.Delete(a, recursive: true);
        ServingHarness.SavedAdapter(a, seed: 2, baseDir: otherBase);
        var (status, _) = await h.Post("v1/completions", new JsonObject { ["model"] = "a", ["prompt"] = "x", ["max_tokens"] = 3 });
        Assert.Equal(409, status);
    }
}

public class ServerLifetimeTests
{
    [Fact]
    public async Task StoppingTheServerTakesItsAdaptersOffTheModel()
    {
        var h = await ServingHarness.Start(new ServerOptions { Adapters = [("lora", ServingHarness.LoraFixture), ("dora", ServingHarness.DoraFixture)] });
        Assert.Equal(2, LoraModel.Of(h.Model).Adapters.Count);
        await h.Server.DisposeAsync();
        Assert.Empty(LoraModel.Of(h.Model).Adapters);
        await h.DisposeAsync();
    }
}
