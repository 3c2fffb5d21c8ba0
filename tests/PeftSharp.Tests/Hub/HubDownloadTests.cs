using PeftSharp.Hub;
using PeftSharp.IO;
using PeftSharp.Models;

namespace PeftSharp.Tests.Hub;

/// <summary>Downloads against the fake Hub through the public API (ModelLocation / HubDownloader), checked on disk.</summary>
public class HubDownloadTests
{
    internal static readonly string[] ModelFiles = ["config.json", "model.safetensors", "tokenizer.json"];

    internal static (string Name, byte[] Bytes)[] TinyLlamaFiles() =>
        [.. ModelFiles.Select(f => (f, File.ReadAllBytes(Path.Combine(TestPaths.TinyLlama, f))))];

    static HubOptions Options(FakeHub hub, string cache, string? token = null, bool offline = false) =>
        new(hub.EndpointString, cache, token, offline);

    [Fact]
    public async Task DownloadsIntoTheHuggingFaceCacheLayoutAndTheSnapshotLoads()
    {
        await using var hub = await FakeHub.StartAsync();
        // Files loading does not need must stay on the Hub: a pickle, another framework's weights, a subfolder.
        var repo = hub.Add("acme/tiny", [.. TinyLlamaFiles(), ("pytorch_model.bin", [1, 2, 3]), ("README.md", "# tiny"u8.ToArray()), ("original/model.safetensors", [9])]);
        string cache = TestPaths.TempDir();

        string snapshot = ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, cache));

        string repoDir = Path.Combine(cache, "models--acme--tiny");
        Assert.Equal(Path.Combine(repoDir, "snapshots", repo.Commit), snapshot);
        Assert.Equal(repo.Commit, File.ReadAllText(Path.Combine(repoDir, "refs", "main")));   // no newline, as Python writes it
        Assert.Equal(ModelFiles, Directory.GetFileSystemEntries(snapshot).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        foreach (var (name, bytes) in TinyLlamaFiles())
        {
            string etag = FakeHub.IsLfs(name) ? FakeHub.Sha256(bytes) : FakeHub.GitBlobId(bytes);
            var link = new FileInfo(Path.Combine(snapshot, name));
            Assert.Equal($"../../blobs/{etag}", link.LinkTarget);                            // relative, as _create_symlink makes it
            Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(repoDir, "blobs", etag)));
            Assert.True(File.Exists(Path.Combine(cache, ".locks", "models--acme--tiny", etag + ".lock")));
        }
        Assert.Empty(Directory.GetFiles(Path.Combine(repoDir, "blobs"), "*.incomplete"));
        Assert.Equal(0, hub.Count("GET /acme/tiny/resolve/main/pytorch_model.bin") + hub.Count("HEAD /acme/tiny/resolve/" + repo.Commit + "/pytorch_model.bin"));
        Assert.DoesNotContain(hub.Requests, r => r.Contains("original/") || r.Contains("README.md"));
        // The safetensors bytes came from the CDN the resolve URL redirected to.
        Assert.Equal(1, hub.Count("GET /cdn/"));

        // Every reader follows the links: weights sized and mapped through them, config and tokenizer read through them.
        using var model = ModelLoader.Load(snapshot);
        using var reader = new CheckpointReader(snapshot);
        Assert.Equal(new FileInfo(Path.Combine(TestPaths.TinyLlama, "model.safetensors")).Length, reader.BytesOnDisk);
        using var tok = TextTokenizer.FromFolder(snapshot, model.Config);
        Assert.NotEmpty(tok.Encode("hello"));
    }

    /// <summary>An adapter repo uploaded from a PeftSharp folder keeps its sidecar (base fingerprint, chat record), and
    /// an older folder's peftsharp_chat.json.</summary>
    [Fact]
    public async Task AnAdapterRepoBringsPeftSharpsSidecarFiles()
    {
        string saved = Path.Combine(TestPaths.TempDir(), "a");
        using (var model = PeftModel.FromPretrained(TestPaths.TinyLlama))
        {
            model.AddAdapter("a", new LoraConfig { R = 2, TargetModules = ["q_proj"] });
            model.SaveAdapter("a", saved);
        }
        File.WriteAllText(Path.Combine(saved, global::PeftSharp.Chat.AdapterChatRecord.LegacyFileName), "{}");
        await using var hub = await FakeHub.StartAsync();
        hub.Add("acme/adapter", Directory.GetFiles(saved).Select(f => (Path.GetFileName(f), File.ReadAllBytes(f))));

        string snapshot = ModelLocation.Download(RepoId.Parse("acme/adapter"), Options(hub, TestPaths.TempDir()));
        Assert.Equal([AdapterFolderFiles.ConfigFile, AdapterFolderFiles.WeightsFile, AdapterFolderFiles.SidecarFile, global::PeftSharp.Chat.AdapterChatRecord.LegacyFileName],
            Directory.GetFileSystemEntries(snapshot).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.NotNull(global::PeftSharp.Tuners.Lora.PeftAdapterIO.Read(snapshot).RecordedBase);
    }

    [Fact]
    public async Task OnlyTheFilesAskedForWhenNarrowed()
    {
        await using var hub = await FakeHub.StartAsync();
        hub.Add("acme/tiny", TinyLlamaFiles());
        string snapshot = ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, TestPaths.TempDir()), only: f => f == "config.json");
        Assert.Equal(["config.json"], Directory.GetFileSystemEntries(snapshot).Select(Path.GetFileName));
        Assert.Equal(0, hub.Count("GET /cdn/"));
    }

    /// <summary>A cache laid out as huggingface_hub lays it out (blobs by etag, relative links, refs/main) is used as is.</summary>
    [Fact]
    public async Task FindsACacheThatHuggingfaceHubMadeWithoutDownloading()
    {
        await using var hub = await FakeHub.StartAsync();
        var repo = hub.Add("acme/tiny", TinyLlamaFiles());
        string cache = TestPaths.TempDir();
        string snapshot = PythonLayout.Write(cache, "acme/tiny", repo.Commit, TinyLlamaFiles());

        Assert.Equal(snapshot, ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, cache)));
        Assert.Equal(["GET /api/models/acme/tiny/revision/main"], hub.Requests);      // the commit is asked; no file is fetched

        hub.Requests.Clear();
        Assert.Equal(snapshot, ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, cache, offline: true)));
        Assert.Equal(snapshot, ModelLocation.Download(RepoId.Parse($"acme/tiny@{repo.Commit}"), Options(hub, cache, offline: true)));
        Assert.Empty(hub.Requests);
    }

    [Fact]
    public async Task ADanglingSnapshotLinkIsFetchedAgain()
    {
        await using var hub = await FakeHub.StartAsync();
        var repo = hub.Add("acme/tiny", TinyLlamaFiles());
        string cache = TestPaths.TempDir();
        string snapshot = PythonLayout.Write(cache, "acme/tiny", repo.Commit, TinyLlamaFiles());
        byte[] weights = TinyLlamaFiles().Single(f => f.Name == "model.safetensors").Bytes;
        File.Delete(Path.Combine(cache, "models--acme--tiny", "blobs", FakeHub.Sha256(weights)));   // a blob removed by hand

        Assert.Equal(snapshot, ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, cache)));
        Assert.Equal(1, hub.Count("GET /cdn/"));
        Assert.Equal(0, hub.Count("HEAD /acme/tiny/resolve/" + repo.Commit + "/config.json"));
        Assert.Equal(weights, File.ReadAllBytes(Path.Combine(snapshot, "model.safetensors")));
    }

    [Fact]
    public async Task ResumesADownloadCutOffMidway()
    {
        await using var hub = await FakeHub.StartAsync();
        var files = TinyLlamaFiles();
        hub.Add("acme/tiny", files);
        long cut = files.Single(f => f.Name == "model.safetensors").Bytes.Length / 3;
        hub.CutFirstTransferAfter = cut;

        string snapshot = ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, TestPaths.TempDir()));

        // The second request asks for the rest: from where the first stopped (what arrived of the first `cut` bytes).
        var ranges = hub.Requests.Where(r => r.StartsWith("GET /cdn/")).Select(r => r.Split(' ').ElementAtOrDefault(2)).ToList();
        Assert.Equal(2, ranges.Count);
        Assert.Null(ranges[0]);
        long resumedAt = long.Parse(ranges[1]!["bytes=".Length..].TrimEnd('-'));
        Assert.InRange(resumedAt, 1, cut);
        Assert.Equal(files.Single(f => f.Name == "model.safetensors").Bytes, File.ReadAllBytes(Path.Combine(snapshot, "model.safetensors")));
    }

    [Fact]
    public async Task ResumesThePartialFileAnEarlierRunLeft()
    {
        await using var hub = await FakeHub.StartAsync();
        var files = TinyLlamaFiles();
        hub.Add("acme/tiny", files);
        string cache = TestPaths.TempDir();
        byte[] weights = files.Single(f => f.Name == "model.safetensors").Bytes;
        string blobs = Path.Combine(cache, "models--acme--tiny", "blobs");
        Directory.CreateDirectory(blobs);
        File.WriteAllBytes(Path.Combine(blobs, FakeHub.Sha256(weights) + ".incomplete"), weights[..1000]);   // a killed run's leftovers

        string snapshot = ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, cache));

        Assert.Equal(["bytes=1000-"], hub.Requests.Where(r => r.StartsWith("GET /cdn/")).Select(r => r.Split(' ')[2]));
        Assert.Equal(weights, File.ReadAllBytes(Path.Combine(snapshot, "model.safetensors")));
        Assert.Empty(Directory.GetFiles(blobs, "*.incomplete"));
    }

    /// <summary>Two downloads of one repo at once: the blob lock makes the second wait and reuse the first's blob.</summary>
    [Fact]
    public async Task ConcurrentDownloadsOfOneBlobFetchItOnce()
    {
        await using var hub = await FakeHub.StartAsync();
        hub.Add("acme/tiny", TinyLlamaFiles());
        hub.CdnDelay = TimeSpan.FromMilliseconds(500);
        string cache = TestPaths.TempDir();
        var both = await Task.WhenAll(Enumerable.Range(0, 2).Select(_ => Task.Run(() => ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, cache)))));
        Assert.Equal(both[0], both[1]);
        Assert.Equal(1, hub.Count("GET /cdn/"));
        Assert.Equal(TinyLlamaFiles().Single(f => f.Name == "model.safetensors").Bytes, File.ReadAllBytes(Path.Combine(both[0], "model.safetensors")));
    }

    [Fact]
    public async Task PrivateRepoNeedsTheTokenFromHfTokenOrTheTokenFile()
    {
        await using var hub = await FakeHub.StartAsync();
        hub.Add("acme/secret", TinyLlamaFiles()).RequiredToken = "hf_sesame";
        string cache = TestPaths.TempDir();

        var e = Assert.Throws<HubException>(() => ModelLocation.Download(RepoId.Parse("acme/secret"), Options(hub, cache)));
        Assert.StartsWith("acme/secret: repository not found", e.Message);
        Assert.Contains("HF_TOKEN", e.Message);
        Assert.False(Directory.Exists(Path.Combine(cache, "models--acme--secret")));

        var wrong = Assert.Throws<HubException>(() => ModelLocation.Download(RepoId.Parse("acme/secret"), Options(hub, cache, token: "hf_wrong")));
        Assert.Contains("not allowed", wrong.Message);

        // The token file `hf auth login` writes under HF_HOME, found through the environment as huggingface_hub finds it.
        string home = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(home, "token"), "hf_sesame\n");
        var env = new Dictionary<string, string> { ["HF_HOME"] = home, ["HF_ENDPOINT"] = hub.EndpointString + "/" };
        var options = HubOptions.FromEnvironment(k => env.GetValueOrDefault(k));
        string snapshot = ModelLocation.Download(RepoId.Parse("acme/secret"), options);
        Assert.StartsWith(Path.Combine(home, "hub", "models--acme--secret", "snapshots"), snapshot);
        Assert.Contains(hub.Requests, r => r.StartsWith("GET /api/models/acme/secret") && r.EndsWith("Bearer hf_sesame"));
    }

    [Fact]
    public async Task GatedRepoWithoutTokenSaysSo()
    {
        await using var hub = await FakeHub.StartAsync();
        var repo = hub.Add("acme/gated", TinyLlamaFiles());
        (repo.Gated, repo.RequiredToken) = (true, "hf_ok");
        string cache = TestPaths.TempDir();
        var e = Assert.Throws<HubException>(() => ModelLocation.Download(RepoId.Parse("acme/gated"), Options(hub, cache)));
        Assert.StartsWith("acme/gated: gated repo (401)", e.Message);
        Assert.DoesNotContain(Directory.GetFiles(cache, "*", SearchOption.AllDirectories), f => f.Contains("blobs") || f.Contains("refs"));
        Assert.True(Directory.Exists(ModelLocation.Download(RepoId.Parse("acme/gated"), Options(hub, cache, token: "hf_ok"))));
    }

    [Fact]
    public async Task UnknownRepoAndRevisionAreOneLineErrors()
    {
        await using var hub = await FakeHub.StartAsync();
        hub.Add("acme/tiny", TinyLlamaFiles());
        string cache = TestPaths.TempDir();
        var repo = Assert.Throws<HubException>(() => ModelLocation.Download(RepoId.Parse("acme/nope"), Options(hub, cache)));
        Assert.StartsWith("acme/nope: repository not found on " + hub.EndpointString, repo.Message);
        var rev = Assert.Throws<HubException>(() => ModelLocation.Download(RepoId.Parse("acme/tiny@v9"), Options(hub, cache)));
        Assert.Equal("acme/tiny@v9: revision 'v9' not found", rev.Message);
        Assert.Empty(Directory.GetFileSystemEntries(cache));
    }

    [Fact]
    public async Task APickleOnlyRepoIsRefusedBeforeAnyDownload()
    {
        await using var hub = await FakeHub.StartAsync();
        hub.Add("acme/old", [TinyLlamaFiles()[0], ("pytorch_model.bin", [1, 2, 3])]);
        string cache = TestPaths.TempDir();
        var e = Assert.Throws<HubException>(() => ModelLocation.Download(RepoId.Parse("acme/old"), Options(hub, cache)));
        Assert.Equal("acme/old: has no .safetensors weights (PeftSharp never loads pickled .bin/.pt files)", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(cache));
    }

    [Fact]
    public async Task OfflineModeUsesOnlyTheCache()
    {
        await using var hub = await FakeHub.StartAsync();
        hub.Add("acme/tiny", TinyLlamaFiles());
        string cache = TestPaths.TempDir();
        var e = Assert.Throws<HubException>(() => ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, cache, offline: true)));
        Assert.Contains("HF_HUB_OFFLINE=1", e.Message);
        Assert.Empty(hub.Requests);
        string online = ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, cache));
        hub.Requests.Clear();
        Assert.Equal(online, ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, cache, offline: true)));
        Assert.Empty(hub.Requests);
    }

    [Fact]
    public async Task NetworkFailureNamesTheHubAndFallsBackToTheCache()
    {
        string cache = TestPaths.TempDir();
        string snapshot;
        string endpoint;
        await using (var hub = await FakeHub.StartAsync())
        {
            hub.Add("acme/tiny", TinyLlamaFiles());
            endpoint = hub.EndpointString;
            snapshot = ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, cache));
        }
        // The Hub is gone: a cached repo still resolves (as snapshot_download does), an uncached one names the cause.
        Assert.Equal(snapshot, ModelLocation.Download(RepoId.Parse("acme/tiny"), new HubOptions(endpoint, cache, null, false)));
        var e = Assert.Throws<HubException>(() => ModelLocation.Download(RepoId.Parse("acme/other"), new HubOptions(endpoint, cache, null, false)));
        Assert.StartsWith($"acme/other: cannot reach {endpoint} (", e.Message);
    }

    [Theory]
    [InlineData(100, "announced")]      // says more than it sends
    [InlineData(-100, "sent more than")] // says less than it sends
    public async Task AServerThatLiesAboutSizesLeavesNothingHalfWritten(long lie, string expected)
    {
        await using var hub = await FakeHub.StartAsync();
        hub.Add("acme/tiny", TinyLlamaFiles());
        hub.LinkedSizeLie = lie;
        string cache = TestPaths.TempDir();
        var e = Assert.Throws<HubException>(() => ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, cache)));
        Assert.StartsWith("acme/tiny: model.safetensors: ", e.Message);
        Assert.Contains(expected, e.Message);
        AssertNoWeightsCached(cache);
    }

    [Fact]
    public async Task BytesThatFailTheEtagHashAreRemoved()
    {
        await using var hub = await FakeHub.StartAsync();
        hub.Add("acme/tiny", TinyLlamaFiles());
        hub.CorruptCdnBytes = true;
        string cache = TestPaths.TempDir();
        var e = Assert.Throws<HubException>(() => ModelLocation.Download(RepoId.Parse("acme/tiny"), Options(hub, cache)));
        Assert.Contains("sha256", e.Message);
        AssertNoWeightsCached(cache);
    }

    /// <summary>No weights blob (complete or partial), no snapshot link to it, and no ref naming the unfinished snapshot.</summary>
    static void AssertNoWeightsCached(string cache)
    {
        string repoDir = Path.Combine(cache, "models--acme--tiny");
        var blobs = Directory.GetFiles(Path.Combine(repoDir, "blobs"));
        Assert.DoesNotContain(blobs, b => Path.GetFileName(b).Length >= 64);
        Assert.DoesNotContain(Directory.GetFiles(repoDir, "*", SearchOption.AllDirectories), f => f.EndsWith("model.safetensors") || f.Contains("incomplete"));
        Assert.False(Directory.Exists(Path.Combine(repoDir, "refs")));
    }

    [Theory]
    [InlineData("acme/tiny", "acme/tiny", "main")]
    [InlineData("acme/tiny@v1.0", "acme/tiny", "v1.0")]
    [InlineData("Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B", "main")]
    [InlineData("org/name@refs/pr/1", "org/name", "refs/pr/1")]
    public void ParsesRepoIds(string value, string id, string revision)
    {
        Assert.True(RepoId.TryParse(value, out var repo));
        Assert.Equal((id, revision), (repo.Id, repo.Revision));
    }

    [Theory]
    [InlineData("tiny")]              // a bare name is a folder that is not there
    [InlineData("/abs/path")]
    [InlineData("a/b/c")]
    [InlineData("acme/ti--ny")]
    [InlineData("acme/tiny.git")]
    [InlineData("acme/tiny@")]
    [InlineData("acme/tiny@../x")]
    [InlineData("./runs")]
    public void RefusesWhatIsNotARepoId(string value) => Assert.False(RepoId.TryParse(value, out _));

    [Fact]
    public void CacheFolderFollowsHuggingfaceHubsEnvironment()
    {
        static HubOptions From(params (string, string)[] vars) => HubOptions.FromEnvironment(k => vars.FirstOrDefault(v => v.Item1 == k).Item2);
        Assert.Equal("/c/hub", From(("HF_HUB_CACHE", "/c/hub"), ("HF_HOME", "/h")).CacheDir);
        Assert.Equal(Path.Combine("/h", "hub"), From(("HF_HOME", "/h")).CacheDir);
        Assert.Equal(Path.Combine("/x", "huggingface", "hub"), From(("XDG_CACHE_HOME", "/x")).CacheDir);
        Assert.EndsWith(Path.Combine(".cache", "huggingface", "hub"), From().CacheDir);
        Assert.Equal("https://huggingface.co", From().Endpoint);
        Assert.True(From(("HF_HUB_OFFLINE", "1")).Offline);
        Assert.True(From(("HF_HUB_OFFLINE", "yes")).Offline);
        Assert.False(From(("HF_HUB_OFFLINE", "0")).Offline);
        Assert.False(From(("HF_HUB_OFFLINE", "0"), ("TRANSFORMERS_OFFLINE", "1")).Offline);   // the first one set decides
        Assert.True(From(("TRANSFORMERS_OFFLINE", "1")).Offline);
        // Errors name the variable that made the process offline, as it was set.
        Assert.Equal("TRANSFORMERS_OFFLINE=1 forbids downloading", From(("TRANSFORMERS_OFFLINE", "1")).OfflineCause);
        Assert.Equal("HF_HUB_OFFLINE=yes forbids downloading", From(("HF_HUB_OFFLINE", "yes")).OfflineCause);
        Assert.Equal("hf_x", From(("HF_TOKEN", " hf_x\n"), ("HF_HOME", "/nonexistent")).Token);
    }
}
