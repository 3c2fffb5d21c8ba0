using PeftSharp.Hub;

namespace PeftSharp.Serving.Adapters;

/// <summary>
/// POST /v1/adapters with a Hugging Face repo id (`ORG/NAME[@REVISION]`) as its path: the adapter is fetched into the
/// shared Hub cache and loaded from its snapshot. Allowed only when that cache lies under --adapter-root: the operator
/// opts in by making the root contain it, and the root's real-path checks then apply to the snapshot as to any folder.
/// A folder of that name under the root wins.
/// </summary>
internal static class HubAdapterPath
{
    public static async Task<string> LocateAsync(string root, string path, CancellationToken ct = default)
    {
        if (Path.IsPathRooted(path) || Directory.Exists(Path.Combine(root, path)) || !RepoId.TryParse(path, out var repo)) return path;
        var options = HubOptions.FromEnvironment();
        string cache = Path.GetFullPath(options.CacheDir), fullRoot = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        if (cache != fullRoot && !cache.StartsWith(fullRoot + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new ServingException(403, $"adapter '{path}' is a Hub repo id; those load only when the Hugging Face cache ({cache}) lies under --adapter-root", "permission_error");
        try
        {
            using var downloader = new HubDownloader(options);
            return await downloader.SnapshotAsync(repo, ct: ct);
        }
        catch (HubException e) { throw ServingException.NotFound(e.Message); }
        catch (IOException e) { throw new ServingException(502, e.Message, "server_error"); }
    }
}
