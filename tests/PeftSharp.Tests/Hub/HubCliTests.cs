using PeftSharp.IO;

namespace PeftSharp.Tests.Hub;

/// <summary>Repo ids through the `peft` commands, the Hub faked on loopback and the cache in a temp HF_HOME.</summary>
[Collection("console")]
public class HubCliTests
{
    /// <summary>Sets the huggingface_hub variables for one test and puts the old values back.</summary>
    sealed class HubEnvironment : IDisposable
    {
        static readonly string[] Names = ["HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"];
        readonly Dictionary<string, string?> _saved = Names.ToDictionary(n => n, Environment.GetEnvironmentVariable);

        public HubEnvironment(string endpoint, string home)
        {
            foreach (var n in Names) Environment.SetEnvironmentVariable(n, null);
            Environment.SetEnvironmentVariable("HF_ENDPOINT", endpoint);
            Environment.SetEnvironmentVariable("HF_HOME", home);
        }

        public void Dispose()
        {
            foreach (var (n, v) in _saved) Environment.SetEnvironmentVariable(n, v);
        }
    }

    /// <summary>A plan's JSON without its model name (a snapshot's commit folder, or the folder it was given as).</summary>
    static string WithoutName(string json) { var o = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject(); o.Remove("model"); return o.ToJsonString(); }

    static string LastLine(string text) => text.TrimEnd().Split('\n')[^1].TrimEnd('\r');

    [Fact]
    public async Task DownloadPrintsTheSnapshotFolderLast()
    {
        await using var hub = await FakeHub.StartAsync();
        var repo = hub.Add("acme/tiny", HubDownloadTests.TinyLlamaFiles());
        repo.Branches["v1"] = repo.Commit;
        string home = TestPaths.TempDir();
        using var _ = new HubEnvironment(hub.EndpointString, home);

        var (code, stdout, stderr) = CliCapture.Run("download", "acme/tiny", "--revision", "v1");

        Assert.True(code == 0, stderr);
        string snapshot = Path.Combine(home, "hub", "models--acme--tiny", "snapshots", repo.Commit);
        Assert.Equal(snapshot, LastLine(stdout));
        Assert.Equal(repo.Commit, File.ReadAllText(Path.Combine(home, "hub", "models--acme--tiny", "refs", "v1")));
        Assert.Contains("model.safetensors", stderr); // progress went to stderr, a line per file when not a terminal
        Assert.DoesNotContain("model.safetensors", stdout);
        Assert.Equal(0, CliCapture.Run("download", "--help").Code);
    }

    [Fact]
    public async Task GenerateDownloadsARepoIdThenRunsOffline()
    {
        string home = TestPaths.TempDir();
        string[] args = ["generate", "--model", "acme/tiny", "--adapter", "acme/tiny-lora", "--prompt", "hello", "--max-new-tokens", "4"];
        string online;
        await using (var hub = await FakeHub.StartAsync())
        {
            hub.Add("acme/tiny", HubDownloadTests.TinyLlamaFiles());
            string lora = Path.Combine(TestPaths.TinyLlama, "adapters", "lora");
            hub.Add("acme/tiny-lora", Directory.GetFiles(lora).Select(f => (Path.GetFileName(f), File.ReadAllBytes(f))));
            using var _ = new HubEnvironment(hub.EndpointString, home);
            var r = CliCapture.Run(args);
            Assert.True(r.Code == 0, r.Err);
            online = r.Out;
        }
        // The same output as from the plain folders.
        var local = CliCapture.Run("generate", "--model", TestPaths.TinyLlama, "--adapter", Path.Combine(TestPaths.TinyLlama, "adapters", "lora"),
            "--prompt", "hello", "--max-new-tokens", "4");
        Assert.Equal(local.Out, online);

        // The Hub is gone; HF_HUB_OFFLINE=1 runs from the cache alone.
        using (new HubEnvironment("http://127.0.0.1:9", home))
        {
            Environment.SetEnvironmentVariable("HF_HUB_OFFLINE", "1");
            var r = CliCapture.Run(args);
            Assert.True(r.Code == 0, r.Err);
            Assert.Equal(online, r.Out);
            // merge from repo ids writes plain files, not links into someone else's cache.
            string merged = Path.Combine(TestPaths.TempDir(), "merged");
            var m = CliCapture.Run("merge", "--model", "acme/tiny", "--adapter", "acme/tiny-lora", "--out", merged);
            Assert.True(m.Code == 0, m.Err);
            Assert.Null(new FileInfo(Path.Combine(merged, "config.json")).LinkTarget);
            Assert.Equal(File.ReadAllBytes(Path.Combine(TestPaths.TinyLlama, "config.json")), File.ReadAllBytes(Path.Combine(merged, "config.json")));

            // serve's start-up adapters: a repo id becomes NAME=<snapshot>.
            var serve = new PeftSharp.Cli.Commands.ServeCommand.Settings { Model = "acme/tiny", Adapters = ["acme/tiny-lora", "qa=acme/tiny-lora"] };
            Assert.True(serve.Validate().Successful);
            string loraSnapshot = Directory.GetDirectories(Path.Combine(home, "hub", "models--acme--tiny-lora", "snapshots")).Single();
            Assert.Equal([("tiny-lora", loraSnapshot), ("qa", loraSnapshot)], serve.Options.Adapters);
            Assert.Equal(Path.Combine(home, "hub", "models--acme--tiny", "snapshots"), Path.GetDirectoryName(serve.Model));

            var missing = CliCapture.Run("generate", "--model", "acme/other", "--prompt", "hello");
            Assert.Equal(1, missing.Code);
            Assert.Equal("error: --model: no folder 'acme/other', and as a Hub repo: acme/other: not in the cache " + Path.Combine(home, "hub")
                + ", and HF_HUB_OFFLINE=1 forbids downloading it", missing.Err.Trim());
        }
    }

    [Fact]
    public async Task UnknownRepoIsOneLineNamingTheFlagAndTheRepo()
    {
        await using var hub = await FakeHub.StartAsync();
        using var _ = new HubEnvironment(hub.EndpointString, TestPaths.TempDir());
        foreach (var args in new[] { new[] { "inspect", "--model", "acme/nope" }, ["download", "acme/nope"] })
        {
            var (code, _, err) = CliCapture.Run(args);
            Assert.Equal(1, code);
            Assert.Single(err.Trim().Split('\n'));
            Assert.Contains("acme/nope: repository not found on " + hub.EndpointString, err);
        }
    }

    /// <summary>
    /// A cached snapshot whose weights link to a blob deleted by hand, with no Hub to fetch it again (offline, or the
    /// endpoint unreachable): one line naming the file and why, not "could not find file" on a file that lists.
    /// </summary>
    /// <summary>
    /// An adapter trained on a model from the cache records the repo id as its base_model_name_or_path, as PEFT does
    /// (AutoPeftModelForCausalLM loads the base from it): not the snapshot folder's commit hash.
    /// </summary>
    [Fact]
    public void AnAdapterTrainedOnACachedRepoRecordsTheRepoIdAsItsBase()
    {
        string home = TestPaths.TempDir();
        string commit = FakeHub.RandomCommit();
        PythonLayout.Write(Path.Combine(home, "hub"), "acme/tiny", commit, HubDownloadTests.TinyLlamaFiles());
        string data = Path.Combine(home, "one.jsonl");
        File.WriteAllText(data, "{\"text\": \"code gold crow cup -> ten ebbin fenn\"}\n");
        string run = Path.Combine(home, "run");
        using (new HubEnvironment("http://127.0.0.1:9", home))
        {
            Environment.SetEnvironmentVariable("HF_HUB_OFFLINE", "1");
            var (code, _, err) = CliCapture.Run("train", "--model", "acme/tiny", "--data", data, "--method", "lora", "--steps", "1", "--batch", "1", "--max-seq", "16", "--out", run);
            Assert.True(code == 0, err);
        }
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(run, "final", "adapter_config.json")))!;
        Assert.Equal("acme/tiny", config["base_model_name_or_path"]!.GetValue<string>());
        // And the commit as PEFT's revision, which AutoPeftModelForCausalLM passes to from_pretrained: without it the
        // base would be loaded at whatever main is then (it was null).
        Assert.Equal(commit, config["revision"]!.GetValue<string>());
    }

    [Fact]
    public void ACachedSnapshotWithAMissingBlobIsOneLineNamingTheFile()
    {
        string home = TestPaths.TempDir();
        string commit = FakeHub.RandomCommit();
        PythonLayout.Write(Path.Combine(home, "hub"), "acme/tiny", commit, HubDownloadTests.TinyLlamaFiles());
        byte[] weights = HubDownloadTests.TinyLlamaFiles().Single(f => f.Name == "model.safetensors").Bytes;
        string blob = Path.Combine(home, "hub", "models--acme--tiny", "blobs", FakeHub.Sha256(weights));
        File.Delete(blob);
        string[] args = ["generate", "--model", "acme/tiny", "--prompt", "hello", "--max-new-tokens", "2"];
        using (new HubEnvironment("http://127.0.0.1:9", home))
        {
            Environment.SetEnvironmentVariable("HF_HUB_OFFLINE", "1");
            var (code, _, err) = CliCapture.Run(args);
            Assert.Equal(1, code);
            Assert.Equal("error: --model: no folder 'acme/tiny', and as a Hub repo: acme/tiny: the cached model.safetensors links to a blob "
                + $"that is gone (../../blobs/{FakeHub.Sha256(weights)}), and HF_HUB_OFFLINE=1 forbids downloading it again", err.Trim());
        }
        using (new HubEnvironment("http://127.0.0.1:9", home))
        {
            var (code, _, err) = CliCapture.Run(args);
            Assert.Equal(1, code);
            Assert.Single(err.Trim().Split('\n'));
            Assert.Contains("acme/tiny: the cached model.safetensors links to a blob that is gone", err);
            Assert.Contains("cannot reach http://127.0.0.1:9", err);
        }
    }

    /// <summary>A snapshot folder of symlinks, passed as a plain path, reproduces the golden logits (weights mapped through links).</summary>
    [Fact]
    public void ASymlinkedSnapshotFolderIsAPlainModelFolder()
    {
        string snapshot = PythonLayout.Write(TestPaths.TempDir(), "acme/tiny", FakeHub.RandomCommit(), HubDownloadTests.TinyLlamaFiles());
        Assert.NotNull(new FileInfo(Path.Combine(snapshot, "model.safetensors")).LinkTarget);
        string output = Path.Combine(TestPaths.TempDir(), "out.safetensors");
        string golden = Path.Combine(TestPaths.TinyLlama, "golden.safetensors");
        var r = CliCapture.Run("logits", "--model", snapshot, "--input", golden, "--output", output);
        Assert.True(r.Code == 0, r.Err);
        using var mine = new SafeTensorsFile(output);
        using var gold = new SafeTensorsFile(golden);
        using var a = mine.Load("logits");
        using var b = gold.Load("logits");
        Assert.True(TestPaths.RelativeError(a, b) <= 1e-5);
        var inspect = CliCapture.Run("inspect", "--model", snapshot);
        Assert.True(inspect.Code == 0, inspect.Err);
    }

    /// <summary>`peft plan --model ORG/NAME` fetches config.json alone and plans the same as from the local folder.</summary>
    [Fact]
    public async Task PlanDownloadsConfigJsonAloneAndPlansLikeTheFolder()
    {
        await using var hub = await FakeHub.StartAsync();
        var repo = hub.Add("acme/tiny", HubDownloadTests.TinyLlamaFiles());
        string home = TestPaths.TempDir();
        using var _ = new HubEnvironment(hub.EndpointString, home);

        var online = CliCapture.Run("plan", "--model", "acme/tiny", "--method", "qlora", "--json");
        Assert.True(online.Code == 0, online.Err);
        var local = CliCapture.Run("plan", "--model", TestPaths.TinyLlama, "--method", "qlora", "--json");
        Assert.True(local.Code == 0, local.Err);
        // The same plan; only the model's name (its folder: the snapshot's commit here) differs.
        Assert.Equal(WithoutName(local.Out), WithoutName(online.Out));
        Assert.Contains("\"total_bytes\"", online.Out);
        string snapshot = Path.Combine(home, "hub", "models--acme--tiny", "snapshots", repo.Commit);
        Assert.Equal(["config.json"], Directory.GetFiles(snapshot).Select(Path.GetFileName));
        Assert.DoesNotContain(hub.Requests, r => r.Contains("model.safetensors"));

        // A repo the Hub does not have: one line naming the flag, exit 1 (a preset name never goes to the Hub).
        var missing = CliCapture.Run("plan", "--model", "acme/nope");
        Assert.Equal(1, missing.Code);
        Assert.Single(missing.Err.Trim().Split('\n'));
        Assert.Contains("--model", missing.Err);
        Assert.Contains("acme/nope", missing.Err);
    }

    /// <summary>`peft plan --model ADAPTER` whose base_model_name_or_path is a repo id: its config.json from the cache,
    /// offline (planning never fetches a base); a base not in the cache is one line naming the folder and the base.</summary>
    [Fact]
    public async Task PlanOfAnAdapterFindsARepoIdBaseInTheCacheOffline()
    {
        await using var hub = await FakeHub.StartAsync();
        hub.Add("acme/tiny", HubDownloadTests.TinyLlamaFiles());
        using var _ = new HubEnvironment(hub.EndpointString, TestPaths.TempDir());
        Assert.Equal(0, CliCapture.Run("plan", "--model", "acme/tiny").Code);   // config.json into the cache
        int requests = hub.Requests.Count;

        string lora = "\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": [\"q_proj\", \"v_proj\"]";
        var planned = CliCapture.Run("plan", "--model", AdapterConfigFolder.Write("acme/tiny", lora), "--json");
        Assert.True(planned.Code == 0, planned.Err);
        var local = CliCapture.Run("plan", "--model", TestPaths.TinyLlama, "--rank", "4", "--targets", "q_proj,v_proj", "--json");
        Assert.Equal(WithoutName(local.Out), WithoutName(planned.Out));

        string other = AdapterConfigFolder.Write("acme/other", lora);
        var missing = CliCapture.Run("plan", "--model", other);
        Assert.Equal(1, missing.Code);
        string line = Assert.Single(missing.Err.Trim().Split('\n'));
        Assert.Contains($"adapter folder '{other}' names base 'acme/other'", line);
        // The plan's own rule, not a variable nobody set (it said "HF_HUB_OFFLINE=1 forbids downloading it").
        Assert.Contains("not in the cache", line);
        Assert.Contains("and peft plan never downloads it", line);
        Assert.DoesNotContain("HF_HUB_OFFLINE", line);
        Assert.Equal(requests, hub.Requests.Count);   // neither plan asked the Hub anything
    }
}
