using System.Net;

namespace PeftSharp.Hub;

/// <summary>
/// snapshot_download for what PeftSharp loads: resolves a revision to its commit, downloads the files a model or
/// adapter folder needs into the shared cache (blobs, relative symlinks, refs), and returns the snapshot folder.
/// Files already in the snapshot are not fetched again, whoever put them there (Python or us). With HF_HUB_OFFLINE=1,
/// or when the Hub cannot be reached, the cached snapshot is used as is.
/// </summary>
internal sealed class HubDownloader : IDisposable
{
    readonly HubOptions _options;
    readonly HubClient _client;
    readonly HttpClient _files;

    public HubCache Cache { get; }

    /// <summary>Called when another process holds a blob's lock and this one waits for it.</summary>
    public Action<string>? OnLockWait { get; init; }

    public HubDownloader(HubOptions options)
    {
        _options = options;
        Cache = new HubCache(options.CacheDir);
        _client = new HubClient(options);
        // The bytes may come from a CDN after further redirects; no overall timeout (reads time out one by one).
        _files = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = true, AutomaticDecompression = DecompressionMethods.None })
        { Timeout = Timeout.InfiniteTimeSpan };
        _files.DefaultRequestHeaders.UserAgent.ParseAdd("peftsharp/1.0");
    }

    /// <summary>
    /// The files loading needs, at the top level of the repo: configs, tokenizer files, chat templates, safetensors
    /// weights and their index, PEFT adapter files. Never pickles (.bin, .pt) or other frameworks' weights.
    /// </summary>
    public static bool IsNeeded(string file) =>
        !file.Contains('/') && (file.EndsWith(".safetensors", StringComparison.Ordinal) || NeededNames.Contains(file));

    static readonly HashSet<string> NeededNames =
    [
        "config.json", "generation_config.json", "model.safetensors.index.json", "adapter_config.json",
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
        "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
        // PeftSharp's adapter metadata beside adapter_config.json (base fingerprint, chat record; the older chat file).
        IO.AdapterFolderFiles.SidecarFile, Chat.AdapterChatRecord.LegacyFileName,
    ];

    public string Snapshot(RepoId repo, IProgress<DownloadProgress>? progress = null, CancellationToken ct = default, Func<string, bool>? only = null) =>
        SnapshotAsync(repo, progress, ct, only).GetAwaiter().GetResult();

    /// <summary>
    /// The snapshot folder of <paramref name="repo"/>, its needed files downloaded first where missing. <paramref name="only"/>
    /// narrows the files further (the memory planner needs config.json alone).
    /// </summary>
    public async Task<string> SnapshotAsync(RepoId repo, IProgress<DownloadProgress>? progress = null, CancellationToken ct = default,
        Func<string, bool>? only = null)
    {
        if (_options.Offline)
            return Whole(repo, Cache.FindSnapshot(repo), $"{_options.OfflineCause} it again")
                ?? throw new HubException($"{repo}: not in the cache {Cache.Root}, and {_options.OfflineCause} it");

        RevisionInfo info;
        try { info = await _client.RevisionAsync(repo, ct); }
        catch (Exception e) when (IsUnreachable(e, ct))
        {
            // snapshot_download does the same: no Hub, but a cached snapshot of this revision, is not an error.
            return Whole(repo, Cache.FindSnapshot(repo), $"cannot reach {_options.Endpoint} ({Cause(e)}) to download it again")
                ?? throw new HubException($"{repo}: cannot reach {_options.Endpoint} ({Cause(e)}), and the cache {Cache.Root} has no copy");
        }

        var needed = info.Files.Where(IsNeeded).Order(StringComparer.Ordinal).ToList();
        if (!needed.Contains("config.json") && !needed.Contains("adapter_config.json"))
            throw new HubException($"{repo}: has no config.json or adapter_config.json at the top level, so it is not a model or adapter PeftSharp loads");
        if (only is null && !needed.Any(f => f.EndsWith(".safetensors", StringComparison.Ordinal)))
            throw new HubException($"{repo}: has no .safetensors weights (PeftSharp never loads pickled .bin/.pt files)");
        if (only is not null) needed = needed.Where(only).ToList();

        var transfer = new BlobTransfer(_client, _files);
        foreach (var file in needed)
        {
            string pointer = Cache.PointerPath(repo, info.Commit, file);
            if (HubCache.IsLive(pointer)) continue; // already cached, by us or by Python
            FileMetadata meta;
            try { meta = await _client.MetadataAsync(repo, info.Commit, file, ct); }
            catch (Exception e) when (IsUnreachable(e, ct))
            {
                throw new HubException($"{repo}: {file}: cannot reach {_options.Endpoint} ({Cause(e)})", e);
            }
            if (meta.Commit != info.Commit)
                throw new HubException($"{repo}: {file}: the Hub served commit {meta.Commit} for commit {info.Commit}");
            string blob = Cache.BlobPath(repo, meta.Etag);
            using (await HubLock.AcquireAsync(Cache.LockPath(repo, meta.Etag), () => OnLockWait?.Invoke(file), ct))
            {
                if (!File.Exists(blob))
                {
                    Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
                    await transfer.FetchAsync(repo, file, meta, blob, progress, ct);
                }
                Cache.LinkPointer(blob, pointer);
            }
        }
        // The ref last: a revision names a snapshot only once every file it needs is there.
        Cache.WriteRef(repo, repo.Revision, info.Commit);
        return Cache.SnapshotFolder(repo, info.Commit);
    }

    /// <summary>
    /// A cached snapshot used without the Hub, refused when one of its files is a link to a blob that is gone (deleted
    /// by hand, or a cache cleaned half-way): loading would fail later with "could not find file" on a file that lists.
    /// </summary>
    static string? Whole(RepoId repo, string? snapshot, string why)
    {
        if (snapshot is null) return null;
        foreach (var file in Directory.EnumerateFiles(snapshot, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            if (!HubCache.IsLive(file))
                throw new HubException($"{repo}: the cached {Path.GetRelativePath(snapshot, file)} links to a blob that is gone "
                    + $"({new FileInfo(file).LinkTarget}), and {why}");
        return snapshot;
    }

    /// <summary>No answer from the Hub at all, or a server error: the cases where huggingface_hub falls back to the cache.</summary>
    static bool IsUnreachable(Exception e, CancellationToken ct) =>
        e is HttpRequestException { StatusCode: null or >= HttpStatusCode.InternalServerError }
        || e is TaskCanceledException && !ct.IsCancellationRequested;

    static string Cause(Exception e) => e is TaskCanceledException ? "timed out" : (e.InnerException ?? e).Message;

    public void Dispose()
    {
        _client.Dispose();
        _files.Dispose();
    }
}
