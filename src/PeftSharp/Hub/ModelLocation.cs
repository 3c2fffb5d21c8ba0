namespace PeftSharp.Hub;

/// <summary>
/// What a --model or --adapter value names: an existing folder (always wins), else a Hugging Face repo id
/// (`ORG/NAME[@REVISION]`) resolved to its snapshot folder in the shared cache, downloaded when needed.
/// </summary>
public static class ModelLocation
{
    /// <summary>True when the value could name something: an existing folder, or a well-formed repo id.</summary>
    public static bool IsFolderOrRepoId(string value) => Directory.Exists(value) || RepoId.TryParse(value, out _);

    /// <summary>
    /// The folder <paramref name="value"/> names. Errors are one line naming <paramref name="what"/> (the flag) and
    /// the cause; a value that is neither a folder nor a repo id says so.
    /// </summary>
    public static string Resolve(string value, string what, HubOptions? options = null, IProgress<DownloadProgress>? progress = null,
        Action<string>? onLockWait = null)
    {
        // A .gguf file (or a folder holding one, without config.json) stands for the model folder made from it.
        if (IO.Gguf.GgufModelSource.IsGguf(value))
        {
            try { return IO.Gguf.GgufModelSource.Prepare(value); }
            catch (InvalidDataException e) { throw new IOException(e.Message, e); }
        }
        if (Directory.Exists(value)) return value;
        if (!RepoId.TryParse(value, out var repo))
            throw new DirectoryNotFoundException($"{what}: folder '{value}' not found (nor is it a Hugging Face repo id, ORG/NAME[@REVISION])");
        try { return Download(repo, options, progress, onLockWait); }
        catch (IOException e)
        {
            // A path-like repo id is most often a mistyped folder: say both.
            throw new IOException($"{what}: no folder '{value}', and as a Hub repo: {e.Message}", e);
        }
    }

    /// <summary>
    /// The snapshot folder of a repo in the shared cache, downloaded where needed; errors name the repo.
    /// <paramref name="only"/> limits the files (e.g. config.json alone for the memory planner).
    /// </summary>
    public static string Download(RepoId repo, HubOptions? options = null, IProgress<DownloadProgress>? progress = null,
        Action<string>? onLockWait = null, Func<string, bool>? only = null)
    {
        using var downloader = new HubDownloader(options ?? HubOptions.FromEnvironment()) { OnLockWait = onLockWait };
        return downloader.Snapshot(repo, progress, only: only);
    }
}
