using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace PeftSharp.Tests.Hub;

/// <summary>
/// A Hugging Face Hub on 127.0.0.1 speaking the protocol huggingface_hub uses:
/// GET /api/models/{repo}/revision/{rev} (sha + siblings); HEAD/GET /{repo}/resolve/{rev}/{file} answering small files
/// directly (ETag = git blob id) and LFS files (*.safetensors) with a 302 to /cdn/{sha256} carrying X-Repo-Commit,
/// X-Linked-Etag and X-Linked-Size; the CDN honours Range. Errors carry X-Error-Code as the Hub's do. Knobs make it
/// private, gated, cut a transfer short, or lie about sizes and hashes.
/// </summary>
public sealed class FakeHub : IAsyncDisposable
{
    public sealed class Repo
    {
        public Dictionary<string, byte[]> Files { get; } = new(StringComparer.Ordinal);
        public string Commit { get; set; } = RandomCommit();
        public Dictionary<string, string> Branches { get; } = [];
        public string? RequiredToken { get; set; }     // private: 401 RepoNotFound without it
        public bool Gated { get; set; }                 // files need the token: 401 GatedRepo
    }

    public ConcurrentDictionary<string, Repo> Repos { get; } = new();
    /// <summary>Every request as "METHOD path [Range] [auth]".</summary>
    public ConcurrentQueue<string> Requests { get; } = new();
    /// <summary>The first CDN GET sends this many bytes, then drops the connection.</summary>
    public long? CutFirstTransferAfter { get; set; }
    /// <summary>Added to the X-Linked-Size the metadata announces (the body stays true).</summary>
    public long LinkedSizeLie { get; set; }
    /// <summary>The CDN waits this long before it sends a body (so two clients overlap).</summary>
    public TimeSpan CdnDelay { get; set; }
    /// <summary>The CDN serves these bytes instead of the real ones (same length).</summary>
    public bool CorruptCdnBytes { get; set; }

    readonly WebApplication _app;
    public Uri Endpoint { get; }

    FakeHub(WebApplication app, Uri endpoint) { _app = app; Endpoint = endpoint; }

    public static async Task<FakeHub> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        FakeHub? hub = null;
        app.Run(ctx => hub!.HandleAsync(ctx));
        await app.StartAsync();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        hub = new FakeHub(app, new Uri(address.TrimEnd('/')));
        return hub;
    }

    public string EndpointString => Endpoint.ToString().TrimEnd('/');

    public Repo Add(string id, IEnumerable<(string Name, byte[] Bytes)> files)
    {
        var repo = new Repo();
        foreach (var (name, bytes) in files) repo.Files[name] = bytes;
        repo.Branches["main"] = repo.Commit;
        Repos[id] = repo;
        return repo;
    }

    public int Count(string prefix) => Requests.Count(r => r.StartsWith(prefix, StringComparison.Ordinal));

    public static string RandomCommit() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(20));
    public static string Sha256(byte[] b) => Convert.ToHexStringLower(SHA256.HashData(b));
    public static string GitBlobId(byte[] b) => Convert.ToHexStringLower(SHA1.HashData([.. Encoding.ASCII.GetBytes($"blob {b.Length}\0"), .. b]));
    public static bool IsLfs(string file) => file.EndsWith(".safetensors", StringComparison.Ordinal) || file.EndsWith(".bin", StringComparison.Ordinal);

    async Task HandleAsync(HttpContext ctx)
    {
        var req = ctx.Request;
        string path = Uri.UnescapeDataString(req.Path.Value ?? "");
        Requests.Enqueue($"{req.Method} {path} {req.Headers.Range} {req.Headers.Authorization}".TrimEnd());
        var parts = path.Trim('/').Split('/');
        if (parts is ["api", "models", var org, var name, "revision", .. var rev]) { await RevisionAsync(ctx, $"{org}/{name}", string.Join('/', rev)); return; }
        if (parts is [var o, var n, "resolve", var r, .. var file]) { await ResolveAsync(ctx, $"{o}/{n}", r, string.Join('/', file)); return; }
        if (parts is ["cdn", var sha]) { await CdnAsync(ctx, sha); return; }
        ctx.Response.StatusCode = 404;
    }

    bool Authorised(HttpContext ctx, Repo repo) =>
        repo.RequiredToken is null || ctx.Request.Headers.Authorization.ToString() == $"Bearer {repo.RequiredToken}";

    static Task Error(HttpContext ctx, int status, string code, string message)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.Headers["X-Error-Code"] = code;
        ctx.Response.Headers["X-Error-Message"] = message;
        return Task.CompletedTask;
    }

    (Repo?, string?) Find(string id, string revision)
    {
        if (!Repos.TryGetValue(id, out var repo)) return (null, null);
        string? commit = repo.Branches.TryGetValue(revision, out var c) ? c : revision == repo.Commit ? repo.Commit : null;
        return (repo, commit);
    }

    async Task RevisionAsync(HttpContext ctx, string id, string revision)
    {
        var (repo, commit) = Find(id, revision);
        if (repo is null || (!Authorised(ctx, repo) && !repo.Gated)) { await Error(ctx, 401, "RepoNotFound", "Repository not found"); return; }
        if (commit is null) { await Error(ctx, 404, "RevisionNotFound", "Invalid rev id: " + revision); return; }
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(JsonSerializer.Serialize(new
        {
            id, modelId = id, sha = commit, gated = repo.Gated ? "auto" : (object)false, @private = repo.RequiredToken is not null,
            siblings = repo.Files.Keys.Select(f => new { rfilename = f }),
        }));
    }

    async Task ResolveAsync(HttpContext ctx, string id, string revision, string file)
    {
        var (repo, commit) = Find(id, revision);
        if (repo is null || (!Authorised(ctx, repo) && !repo.Gated)) { await Error(ctx, 401, "RepoNotFound", "Repository not found"); return; }
        if (repo.Gated && !Authorised(ctx, repo)) { await Error(ctx, 401, "GatedRepo", "Access to model " + id + " is restricted."); return; }
        if (commit is null) { await Error(ctx, 404, "RevisionNotFound", "Invalid rev id: " + revision); return; }
        if (!repo.Files.TryGetValue(file, out var bytes)) { await Error(ctx, 404, "EntryNotFound", file + " does not exist"); return; }
        ctx.Response.Headers["X-Repo-Commit"] = commit;
        if (IsLfs(file))
        {
            string sha = Sha256(bytes);
            ctx.Response.StatusCode = 302;
            ctx.Response.Headers.ETag = $"\"{GitBlobId(Encoding.ASCII.GetBytes("lfs pointer " + sha))}\"";
            ctx.Response.Headers["X-Linked-Etag"] = $"\"{sha}\"";
            ctx.Response.Headers["X-Linked-Size"] = (bytes.Length + LinkedSizeLie).ToString();
            ctx.Response.Headers.Location = $"{EndpointString}/cdn/{sha}";
            return;
        }
        ctx.Response.Headers.ETag = $"\"{GitBlobId(bytes)}\"";
        ctx.Response.ContentLength = bytes.Length;
        if (HttpMethods.IsGet(ctx.Request.Method)) await ctx.Response.Body.WriteAsync(bytes);
    }

    async Task CdnAsync(HttpContext ctx, string sha)
    {
        var bytes = Repos.Values.SelectMany(r => r.Files.Values).FirstOrDefault(b => Sha256(b) == sha);
        if (bytes is null) { ctx.Response.StatusCode = 404; return; }
        if (CorruptCdnBytes) { bytes = (byte[])bytes.Clone(); bytes[^1] ^= 0xFF; }
        long from = 0;
        if (ctx.Request.Headers.Range.ToString() is { Length: > 0 } range && range.StartsWith("bytes=", StringComparison.Ordinal))
        {
            from = long.Parse(range["bytes=".Length..].TrimEnd('-'));
            ctx.Response.StatusCode = 206;
            ctx.Response.Headers.ContentRange = $"bytes {from}-{bytes.Length - 1}/{bytes.Length}";
        }
        ctx.Response.ContentLength = bytes.Length - from;
        if (!HttpMethods.IsGet(ctx.Request.Method)) return;
        await Task.Delay(CdnDelay);
        if (CutFirstTransferAfter is long cut)
        {
            CutFirstTransferAfter = null;
            await ctx.Response.Body.WriteAsync(bytes.AsMemory((int)from, (int)(cut - from)));
            await ctx.Response.Body.FlushAsync();
            await Task.Delay(300); // let the client read them: an abort resets the connection and drops unread bytes
            ctx.Abort();
            return;
        }
        await ctx.Response.Body.WriteAsync(bytes.AsMemory((int)from));
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
