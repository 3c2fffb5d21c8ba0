using PeftSharp.IO;

namespace PeftSharp.Hub;

/// <summary>
/// The huggingface_hub cache layout (file_download.py), shared with Python:
/// <code>
/// &lt;cache&gt;/models--ORG--NAME/blobs/&lt;etag&gt;                      the bytes, named by their etag
///                            refs/&lt;revision&gt;                   the commit a branch or tag was at
///                            snapshots/&lt;commit&gt;/&lt;file&gt;         -> ../../blobs/&lt;etag&gt; (relative symlink)
/// &lt;cache&gt;/.locks/models--ORG--NAME/&lt;etag&gt;.lock               one download of a blob at a time
/// </code>
/// </summary>
internal sealed class HubCache(string root)
{
    public string Root { get; } = root;

    public string RepoFolder(RepoId repo) => Path.Combine(Root, repo.FolderName);
    public string BlobPath(RepoId repo, string etag) => Path.Combine(RepoFolder(repo), "blobs", etag);
    public string SnapshotFolder(RepoId repo, string commit) => Path.Combine(RepoFolder(repo), "snapshots", commit);
    public string PointerPath(RepoId repo, string commit, string file) => Path.Combine(SnapshotFolder(repo, commit), file);
    public string LockPath(RepoId repo, string etag) => Path.Combine(Root, ".locks", repo.FolderName, etag + ".lock");
    string RefPath(RepoId repo, string revision) => Path.Combine(RepoFolder(repo), "refs", revision);

    /// <summary>The commit a revision names: itself when it is a full hash, else what refs/&lt;revision&gt; holds (null if absent).</summary>
    public string? CommitOf(RepoId repo, string revision)
    {
        if (RepoId.CommitHash().IsMatch(revision)) return revision;
        string refPath = RefPath(repo, revision);
        return File.Exists(refPath) ? File.ReadAllText(refPath).Trim() : null;
    }

    /// <summary>The snapshot folder of a revision when the cache has it (snapshot_download's offline path), else null.</summary>
    public string? FindSnapshot(RepoId repo)
    {
        string? commit = CommitOf(repo, repo.Revision);
        if (commit is null || !RepoId.CommitHash().IsMatch(commit)) return null;
        string folder = SnapshotFolder(repo, commit);
        return Directory.Exists(folder) ? folder : null;
    }

    /// <summary>A file, or a link whose final target is a file; a dangling link (a blob deleted by hand) is not.</summary>
    public static bool IsLive(string path)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is null) return info.Exists;
        return info.ResolveLinkTarget(returnFinalTarget: true) is { Exists: true };
    }

    /// <summary>refs/&lt;revision&gt; = commit, written atomically; nothing when the revision is the commit itself.</summary>
    public void WriteRef(RepoId repo, string revision, string commit)
    {
        if (revision == commit) return;
        string refPath = RefPath(repo, revision);
        if (File.Exists(refPath) && File.ReadAllText(refPath) == commit) return;
        AtomicFile.WriteAllText(refPath, commit);
    }

    /// <summary>
    /// snapshots/&lt;commit&gt;/&lt;file&gt; -> the blob, as a relative link (huggingface_hub's _create_symlink: relative so a
    /// moved cache keeps working); a nested file gets one more "../" per folder, as os.path.relpath gives.
    /// </summary>
    public void LinkPointer(string blobPath, string pointerPath)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(pointerPath)!);
        string relative = Path.GetRelativePath(Path.GetDirectoryName(pointerPath)!, blobPath);
        if (File.Exists(pointerPath) || new FileInfo(pointerPath).LinkTarget is not null) File.Delete(pointerPath);
        File.CreateSymbolicLink(pointerPath, relative);
    }
}
