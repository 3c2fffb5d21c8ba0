using System.Security.Cryptography;

namespace PeftSharp.Serving.Adapters;

/// <summary>Path rules for runtime loading and the content hash of an adapter folder.</summary>
public static class AdapterPaths
{
    /// <summary>
    /// Resolves <paramref name="path"/> (relative to <paramref name="root"/> or absolute) to a real folder that lies
    /// under the root's real path. Symlinks are resolved at every level, so a link pointing outside is refused.
    /// </summary>
    public static string ResolveUnderRoot(string root, string path)
    {
        if (string.IsNullOrWhiteSpace(path)) throw ServingException.BadRequest("'path' is required");
        if (path.Contains('\0')) throw ServingException.BadRequest("'path' contains a NUL character");
        string realRoot = RealPath(Path.GetFullPath(root)) ?? throw new InvalidOperationException($"--adapter-root '{root}' does not exist");
        string full = Path.GetFullPath(Path.IsPathRooted(path) ? path : Path.Combine(realRoot, path));
        string? real = RealPath(full);
        if (real is null || !Directory.Exists(real)) throw ServingException.NotFound($"adapter folder '{path}' not found under the adapter root");
        string prefix = realRoot.EndsWith(Path.DirectorySeparatorChar) ? realRoot : realRoot + Path.DirectorySeparatorChar;
        if (!real.StartsWith(prefix, StringComparison.Ordinal))
            throw new ServingException(403, $"adapter path '{path}' resolves outside the adapter root", "permission_error");
        return real;
    }

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
