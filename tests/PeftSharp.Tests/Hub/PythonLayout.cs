using System.Text;

namespace PeftSharp.Tests.Hub;

/// <summary>
/// A cache written the way huggingface_hub's hf_hub_download writes it (file_download.py): blobs named by etag (sha256
/// for LFS files, the git blob id otherwise), snapshots/&lt;commit&gt;/&lt;file&gt; as relative links into blobs/, refs/main
/// holding the commit without a newline, a .locks folder.
/// </summary>
public static class PythonLayout
{
    public static string Write(string cache, string repoId, string commit, IEnumerable<(string Name, byte[] Bytes)> files)
    {
        string repoDir = Path.Combine(cache, "models--" + repoId.Replace("/", "--"));
        string snapshot = Path.Combine(repoDir, "snapshots", commit);
        Directory.CreateDirectory(Path.Combine(repoDir, "blobs"));
        Directory.CreateDirectory(snapshot);
        Directory.CreateDirectory(Path.Combine(repoDir, "refs"));
        Directory.CreateDirectory(Path.Combine(cache, ".locks", "models--" + repoId.Replace("/", "--")));
        foreach (var (name, bytes) in files)
        {
            string etag = FakeHub.IsLfs(name) ? FakeHub.Sha256(bytes) : FakeHub.GitBlobId(bytes);
            File.WriteAllBytes(Path.Combine(repoDir, "blobs", etag), bytes);
            File.CreateSymbolicLink(Path.Combine(snapshot, name), "../../blobs/" + etag);
        }
        File.WriteAllText(Path.Combine(repoDir, "refs", "main"), commit, new UTF8Encoding(false));
        return snapshot;
    }
}
