namespace PeftSharp.IO;

/// <summary>
/// Write-to-temp-then-rename. A crash, a full disk or an exception mid-write leaves the previous file
/// (or folder) untouched: the rename is the only moment the destination changes.
/// </summary>
public static class AtomicFile
{
    public static void Write(string path, Action<FileStream> write)
    {
        string full = System.IO.Path.GetFullPath(path);
        string dir = System.IO.Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        string tmp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            TryDelete(tmp);
            throw;
        }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, fs => { using var w = new StreamWriter(fs, leaveOpen: true); w.Write(text); });

    /// <summary>
    /// Builds a folder in a sibling temp folder, then swaps it in. The old folder is removed only after the
    /// new one is complete, so an interrupted save never leaves a half-written folder under the final name.
    /// </summary>
    public static void WriteFolder(string dir, Action<string> build)
    {
        string full = System.IO.Path.GetFullPath(dir).TrimEnd('/');
        string parent = System.IO.Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(parent);
        string tmp = System.IO.Path.Combine(parent, $".{System.IO.Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        string old = tmp + ".old";
        Directory.CreateDirectory(tmp);
        try
        {
            build(tmp);
            if (Directory.Exists(full)) Directory.Move(full, old);
            Directory.Move(tmp, full);
        }
        catch
        {
            if (!Directory.Exists(full) && Directory.Exists(old)) Directory.Move(old, full);
            TryDeleteDir(tmp);
            throw;
        }
        TryDeleteDir(old);
    }

    static void TryDelete(string p) { try { File.Delete(p); } catch (IOException) { } }
    static void TryDeleteDir(string p) { try { if (Directory.Exists(p)) Directory.Delete(p, true); } catch (IOException) { } }
}
