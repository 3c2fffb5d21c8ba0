using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;

namespace PeftSharp.Hub;

/// <summary>
/// Downloads one blob to `blobs/&lt;etag&gt;.incomplete`, resuming with a Range request from whatever an earlier run left
/// there, checks the size and the hash the etag names, then renames it to `blobs/&lt;etag&gt;`: a blob exists only complete
/// and verified. A dropped connection keeps the partial file (the next try or run resumes it); a server that lies about
/// the size, or bytes that fail the hash, remove it.
/// </summary>
sealed class BlobTransfer(HubClient client, HttpClient http)
{
    const int MaxAttemptsWithoutProgress = 5;                    // http_get's _nb_retries
    static readonly TimeSpan ReadTimeout = TimeSpan.FromSeconds(10); // HF_HUB_DOWNLOAD_TIMEOUT's default

    public async Task FetchAsync(RepoId repo, string file, FileMetadata meta, string blobPath, IProgress<DownloadProgress>? progress, CancellationToken ct)
    {
        string incomplete = blobPath + ".incomplete";
        try
        {
            await ReceiveAsync(repo, file, meta, incomplete, progress, ct);
            Verify(repo, file, meta, incomplete);
        }
        catch (HubException)
        {
            File.Delete(incomplete); // bytes that are known wrong are no use to a resume
            throw;
        }
        File.Move(incomplete, blobPath, overwrite: true);
    }

    async Task ReceiveAsync(RepoId repo, string file, FileMetadata meta, string incomplete, IProgress<DownloadProgress>? progress, CancellationToken ct)
    {
        int failures = 0;
        while (true)
        {
            long have = File.Exists(incomplete) ? new FileInfo(incomplete).Length : 0;
            if (have > meta.Size) { File.Delete(incomplete); have = 0; } // left by a different, larger file: start over
            progress?.Report(new DownloadProgress(file, have, meta.Size));
            if (have == meta.Size) return;
            try
            {
                await ReceiveOnceAsync(repo, file, meta, incomplete, have, progress, ct);
                long got = new FileInfo(incomplete).Length;
                if (got != meta.Size)
                    throw new HubException($"{repo}: {file}: the server announced {meta.Size} bytes but sent {got}; the partial file was removed");
                return;
            }
            catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException && e is not HubException && !ct.IsCancellationRequested)
            {
                long now = File.Exists(incomplete) ? new FileInfo(incomplete).Length : 0;
                failures = now > have ? 1 : failures + 1;
                if (failures >= MaxAttemptsWithoutProgress)
                    throw new IOException($"{repo}: {file}: network failure after {now} of {meta.Size} bytes ({Cause(e)}); run again to resume from {incomplete}", e);
                await Task.Delay(TimeSpan.FromMilliseconds(200 * failures), ct);
            }
        }
    }

    async Task ReceiveOnceAsync(RepoId repo, string file, FileMetadata meta, string incomplete, long have, IProgress<DownloadProgress>? progress, CancellationToken ct)
    {
        // A signed CDN URL on another host carries its own authorisation: the token goes only to the Hub's host.
        bool sameHost = Uri.Compare(meta.Location, new Uri(client.Endpoint), UriComponents.SchemeAndServer, UriFormat.Unescaped, StringComparison.OrdinalIgnoreCase) == 0;
        using var request = client.Request(HttpMethod.Get, meta.Location, withToken: sameHost);
        if (have > 0) request.Headers.Range = new RangeHeaderValue(have, null);
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
        if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
        {
            File.Delete(incomplete); // the partial file is not a prefix of this blob: start over
            throw new IOException("the server refused the resume range");
        }
        if (HubException.IsServerError(response.StatusCode)) throw new HttpRequestException($"{(int)response.StatusCode} {response.ReasonPhrase}");
        if (!response.IsSuccessStatusCode) throw HubException.FromResponse(repo, response, client.Endpoint, client.HasToken, file);
        bool resumed = have > 0 && response.StatusCode == HttpStatusCode.PartialContent;
        if (resumed && response.Content.Headers.ContentRange?.From != have)
            throw new HubException($"{repo}: {file}: asked for bytes from {have}, the server answered {response.Content.Headers.ContentRange}");
        if (!resumed) have = 0; // a 200 to a Range request is the whole file (http_get does the same)

        await using var body = await response.Content.ReadAsStreamAsync(ct);
        await using var output = new FileStream(incomplete, resumed ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
        var buffer = new byte[1 << 16];
        while (true)
        {
            using var readTimeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            readTimeout.CancelAfter(ReadTimeout);
            int n = await body.ReadAsync(buffer, readTimeout.Token);
            if (n == 0) break;
            have += n;
            if (have > meta.Size)
                throw new HubException($"{repo}: {file}: the server sent more than the {meta.Size} bytes it announced; the partial file was removed");
            await output.WriteAsync(buffer.AsMemory(0, n), ct);
            progress?.Report(new DownloadProgress(file, have, meta.Size));
        }
    }

    /// <summary>
    /// The etag of an LFS file is the sha256 of its bytes; of a file in git, its blob id (sha1 of "blob N\0" + bytes).
    /// Any other etag is checked by size only.
    /// </summary>
    static void Verify(RepoId repo, string file, FileMetadata meta, string path)
    {
        bool lfs = meta.Etag.Length == 64, git = meta.Etag.Length == 40;
        if (!(lfs || git) || !meta.Etag.All(char.IsAsciiHexDigit)) return;
        using var hash = IncrementalHash.CreateHash(lfs ? HashAlgorithmName.SHA256 : HashAlgorithmName.SHA1);
        if (git) hash.AppendData(Encoding.ASCII.GetBytes($"blob {meta.Size}\0"));
        using (var stream = File.OpenRead(path))
        {
            var buffer = new byte[1 << 20];
            int n;
            while ((n = stream.Read(buffer)) > 0) hash.AppendData(buffer, 0, n);
        }
        string actual = Convert.ToHexStringLower(hash.GetHashAndReset());
        if (!actual.Equals(meta.Etag, StringComparison.OrdinalIgnoreCase))
            throw new HubException($"{repo}: {file}: the downloaded bytes have {(lfs ? "sha256" : "git blob id")} {actual}, not the etag {meta.Etag}; the download was removed");
    }

    static string Cause(Exception e) => e is OperationCanceledException ? "no data for 10 s" : (e.InnerException ?? e).Message;
}
