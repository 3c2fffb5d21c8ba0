using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;

namespace PeftSharp.Hub;

/// <summary>What GET /api/models/{repo}/revision/{rev} says: the commit and the file names (hf_api.model_info).</summary>
internal sealed record RevisionInfo(string Commit, IReadOnlyList<string> Files);

/// <summary>
/// A file's metadata from HEAD {endpoint}/{repo}/resolve/{rev}/{file} (file_download.get_hf_file_metadata): the commit
/// (X-Repo-Commit), the etag (X-Linked-Etag of an LFS file, else ETag, quotes and W/ stripped), where the bytes are
/// (the redirect's Location for a file on the CDN) and the size (X-Linked-Size, else Content-Length).
/// </summary>
internal sealed record FileMetadata(string Commit, string Etag, Uri Location, long Size);

/// <summary>The Hub's HTTP protocol, as huggingface_hub speaks it.</summary>
internal sealed class HubClient : IDisposable
{
    static readonly TimeSpan MetadataTimeout = TimeSpan.FromSeconds(10); // HF_HUB_ETAG_TIMEOUT's default

    readonly HttpClient _api;
    readonly HubOptions _options;

    public HubClient(HubOptions options)
    {
        _options = options;
        // Redirects are followed by hand: the first redirect of a resolve URL carries the X-Linked-* headers.
        _api = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false, AutomaticDecompression = DecompressionMethods.None })
        { Timeout = MetadataTimeout };
        _api.DefaultRequestHeaders.UserAgent.ParseAdd("peftsharp/1.0");
    }

    public string Endpoint => _options.Endpoint;
    public bool HasToken => _options.Token is not null;

    public HttpRequestMessage Request(HttpMethod method, Uri url, bool withToken = true)
    {
        var request = new HttpRequestMessage(method, url);
        if (withToken && _options.Token is { } token) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        // No compression: Content-Length must be the file's real size (get_hf_file_metadata sets the same).
        request.Headers.AcceptEncoding.ParseAdd("identity");
        return request;
    }

    public async Task<RevisionInfo> RevisionAsync(RepoId repo, CancellationToken ct)
    {
        var url = new Uri($"{Endpoint}/api/models/{repo.Id}/revision/{Uri.EscapeDataString(repo.Revision)}");
        using var request = Request(HttpMethod.Get, url);
        using var response = await _api.SendAsync(request, ct);
        if (HubException.IsServerError(response.StatusCode))
            throw new HttpRequestException($"{(int)response.StatusCode} {response.ReasonPhrase}", null, response.StatusCode);
        if (!response.IsSuccessStatusCode) throw HubException.FromResponse(repo, response, Endpoint, HasToken);
        string body = await response.Content.ReadAsStringAsync(ct);
        try
        {
            using var doc = JsonDocument.Parse(body);
            var root = doc.RootElement;
            string sha = root.GetProperty("sha").GetString() ?? "";
            if (!RepoId.CommitHash().IsMatch(sha)) throw new HubException($"{repo}: {url} gave commit '{sha}', not a 40-hex commit hash");
            var files = root.TryGetProperty("siblings", out var sib) && sib.ValueKind == JsonValueKind.Array
                ? sib.EnumerateArray().Select(s => s.GetProperty("rfilename").GetString()!).ToList() : [];
            return new RevisionInfo(sha, files);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new HubException($"{repo}: {url} did not answer the Hub's revision JSON ({e.Message})");
        }
    }

    /// <summary>HEAD on the resolve URL, following only relative redirects (a renamed repo), as huggingface_hub does.</summary>
    public async Task<FileMetadata> MetadataAsync(RepoId repo, string commit, string file, CancellationToken ct)
    {
        var url = ResolveUrl(repo.Id, commit, file);
        for (int hop = 0; ; hop++)
        {
            using var request = Request(HttpMethod.Head, url);
            using var response = await _api.SendAsync(request, ct);
            int status = (int)response.StatusCode;
            var location = response.Headers.Location;
            if (status is >= 300 and < 400 && location is not null && !location.IsAbsoluteUri && hop < 10)
            {
                url = new Uri(url, location);
                continue;
            }
            if (status >= 400) throw HubException.FromResponse(repo, response, Endpoint, HasToken, file);
            string? Header(string name) => response.Headers.TryGetValues(name, out var v) ? v.First() : null;
            string? etag = NormalizeEtag(Header("X-Linked-Etag") ?? Header("ETag"));
            bool redirect = status is >= 300 and < 400;
            string? size = Header("X-Linked-Size") ?? (redirect ? null : response.Content.Headers.ContentLength?.ToString());
            string? fileCommit = Header("X-Repo-Commit");
            if (fileCommit is null) throw new HubException($"{repo}: {file}: no X-Repo-Commit header; {Endpoint} does not look like a Hugging Face Hub (proxy or firewall?)");
            if (etag is null) throw new HubException($"{repo}: {file}: the server sent no ETag, so the download cannot be verified");
            if (!long.TryParse(size, out long bytes) || bytes < 0) throw new HubException($"{repo}: {file}: the server sent no file size (X-Linked-Size / Content-Length)");
            if (etag.Contains('/') || etag.Contains('\\') || etag.Contains("..") || etag.Length == 0)
                throw new HubException($"{repo}: {file}: etag '{etag}' cannot name a cache file");
            return new FileMetadata(fileCommit, etag, redirect && location is not null ? location : url, bytes);
        }
    }

    /// <summary>hf_hub_url: {endpoint}/{repo}/resolve/{quote(revision, safe="")}/{quote(filename)}.</summary>
    public Uri ResolveUrl(string repoId, string revision, string file) =>
        new($"{Endpoint}/{repoId}/resolve/{Uri.EscapeDataString(revision)}/{string.Join('/', file.Split('/').Select(Uri.EscapeDataString))}");

    /// <summary>_normalize_etag: `W/"x"` and `"x"` both become x.</summary>
    public static string? NormalizeEtag(string? etag) =>
        etag is null ? null : (etag.StartsWith("W/", StringComparison.Ordinal) ? etag[2..] : etag).Trim('"');

    public void Dispose() => _api.Dispose();
}
