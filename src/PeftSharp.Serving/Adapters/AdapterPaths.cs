using System.Security.Cryptography;

namespace PeftSharp.Serving.Adapters;

/// <summary>Path rules for runtime loading and the content hash of an adapter folder.</summary>
internal static class AdapterPaths
{
    /// <summary>
    /// Resolves <paramref name="path"/> (relative to <paramref name="root"/> or absolute) to a real folder that lies
    /// under the root's real path. Symlinks are resolved at every level, so a link pointing outside is refused.
    /// </summary>
    public static string ResolveUnderRoot(string root, string path)
    {
        if (string.IsNullOrWhiteSpace(path)) throw ServingException.BadRequest("'path' is required");
        if (path.Contains('\0')) throw ServingException.BadRequest("'path' contains a NUL character");
        string realRoot = RealRoot(root);
        string full = Path.GetFullPath(Path.IsPathRooted(path) ? path : Path.Combine(realRoot, path));
        string? real = RealPath(full);
        if (real is null || !Directory.Exists(real)) throw ServingException.NotFound($"adapter folder '{path}' not found under the adapter root");
        if (!IsUnder(realRoot, real)) throw ServingException.Forbidden($"adapter path '{path}' resolves outside the adapter root");
        return real;
    }

    /// <summary>
    /// Refuses (403) a folder holding an entry whose real path lies outside the root: a file-level symlink to
    /// /etc/passwd must not be read, not even to fail parsing it (the error would leak its content). Every entry is
    /// checked, not only the files a loader is known to open today. A dangling link is refused too (its target could
    /// appear later). The message names the entry, never its target.
    /// </summary>
    public static void CheckFilesUnderRoot(string root, string folder)
    {
        string realRoot = RealRoot(root);
        foreach (var entry in Directory.EnumerateFileSystemEntries(folder))
        {
            bool isLink = new FileInfo(entry).LinkTarget is not null;
            if (!isLink && IsUnder(realRoot, entry)) continue;
            if (RealPath(Path.GetFullPath(entry)) is not { } real || !IsUnder(realRoot, real))
                throw ServingException.Forbidden($"adapter folder '{Path.GetFileName(folder)}': '{Path.GetFileName(entry)}' is a link that resolves outside the adapter root");
        }
    }

    static string RealRoot(string root) => RealPath(Path.GetFullPath(root)) ?? throw new InvalidOperationException($"--adapter-root '{root}' does not exist");

    static bool IsUnder(string realRoot, string path) =>
        path.StartsWith(realRoot.EndsWith(Path.DirectorySeparatorChar) ? realRoot : realRoot + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    /// <summary>The path with every symlink component resolved; null when some component does not exist.</summary>
    static string? RealPath(string full)
    {
        string root = Path.GetPathRoot(full)!;
        string current = root;
        foreach (var part in full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            string next = Path.Combine(current, part);
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            if (!info.Exists) return null;
            if (info.LinkTarget is not null)
            {
                var target = info.ResolveLinkTarget(returnFinalTarget: true);
                if (target is null || !target.Exists) return null;
                if (RealPath(target.FullName) is not { } resolved) return null;
                next = resolved;
            }
            current = next;
        }
        return current;
    }

    /// <summary>SHA-256 over the adapter's files (name and bytes, sorted by name): a changed file changes the hash.</summary>
    public static string ContentHash(string folder)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var f in Directory.GetFiles(folder).Where(f => f.EndsWith(".json") || f.EndsWith(".safetensors")).Order(StringComparer.Ordinal))
        {
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes(Path.GetFileName(f) + "\0"));
            using var s = File.OpenRead(f);
            var buf = new byte[1 << 16];
            int n;
            while ((n = s.Read(buf)) > 0) sha.AppendData(buf, 0, n);
        }
        return "sha256:" + Convert.ToHexStringLower(sha.GetHashAndReset());
    }
}
