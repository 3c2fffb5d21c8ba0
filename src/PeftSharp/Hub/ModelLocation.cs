namespace PeftSharp.Hub;

/// <summary>
/// What a --model or --adapter value names: an existing folder (always wins), else a Hugging Face repo id
/// (`ORG/NAME[@REVISION]`) resolved to its snapshot folder in the shared cache, downloaded when needed. This is the
/// library's Hub client (what <c>peft download</c> and every <c>--model</c>/<c>--adapter</c> use): the cache is
/// huggingface_hub's, so Python and .NET share downloads; only the files loading needs are fetched (safetensors
/// weights, configs, tokenizer and chat template files; never pickles).
/// </summary>
public static class ModelLocation
{
    /// <summary>True when the value could name something: an existing folder, or a well-formed repo id.</summary>
    internal static bool IsFolderOrRepoId(string value) => Directory.Exists(value) || RepoId.TryParse(value, out _);

    /// <summary>
    /// The folder <paramref name="value"/> names: an existing folder as is, a .gguf file as the model folder made from
    /// it, else a repo id's snapshot folder (downloaded when needed). Errors are one line naming <paramref name="what"/>
    /// (e.g. "model", "adapter", or a CLI flag) and the cause; a value that is neither a folder nor a repo id says so.
    /// </summary>
    /// <param name="value">A folder, a .gguf file, or `ORG/NAME[@REVISION]`.</param>
    /// <param name="what">What the value is for, named first in error messages.</param>
    /// <param name="options">Hub endpoint, cache, token, offline; null = <see cref="HubOptions.FromEnvironment()"/>.</param>
    /// <param name="progress">Bytes per file as they download.</param>
    /// <param name="onLockWait">Called with a message when another process holds a file's download lock (then this waits).</param>
    /// <exception cref="DirectoryNotFoundException">Neither an existing folder nor a repo id.</exception>
    /// <exception cref="IOException">The download failed (a <see cref="HubException"/> inside) or the .gguf file is unreadable.</exception>
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
    /// <param name="repo">The repo and revision.</param>
    /// <param name="options">Hub endpoint, cache, token, offline; null = <see cref="HubOptions.FromEnvironment()"/>.</param>
    /// <param name="progress">Bytes per file as they download.</param>
    /// <param name="onLockWait">Called with a message when another process holds a file's download lock (then this waits).</param>
    /// <param name="only">Which of the needed files to fetch, by name in the repo; null = all of them.</param>
    /// <returns>The snapshot folder, `CacheDir/models--ORG--NAME/snapshots/COMMIT`.</returns>
    /// <exception cref="HubException">The repo, revision or a file cannot be had (message: the repo and the cause).</exception>
    public static string Download(RepoId repo, HubOptions? options = null, IProgress<DownloadProgress>? progress = null,
        Action<string>? onLockWait = null, Func<string, bool>? only = null)
    {
        using var downloader = new HubDownloader(options ?? HubOptions.FromEnvironment()) { OnLockWait = onLockWait };
        return downloader.Snapshot(repo, progress, only: only);
    }
}
