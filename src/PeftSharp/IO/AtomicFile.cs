namespace PeftSharp.IO;

/// <summary>
/// Write-to-temp-then-rename. A crash, a full disk or an exception mid-write leaves the previous file
/// (or folder) untouched: the rename is the only moment the destination changes.
/// </summary>
internal static class AtomicFile
{
    public static void Write(string path, Action<FileStream> write)
    {
        string full = System.IO.Path.GetFullPath(path);
        string dir = System.IO.Path.GetDirectoryName(full)!;
        string tmp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            FileStream created;
            lock (Gate)
            {
                ThrowIfClosing();
                Directory.CreateDirectory(dir);
                InFlight[tmp] = false;
                created = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
            }
            using (var fs = created)
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            lock (Gate)
            {
                ThrowIfClosing();
                File.Move(tmp, full, overwrite: true);
            }
        }
        catch (Exception e)
        {
            TryDelete(tmp);
            if (DiskFullException.Of(e, full) is { } named) throw named;
            throw;
        }
        finally { InFlight.TryRemove(tmp, out _); }
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
        try
        {
            lock (Gate)
            {
                ThrowIfClosing();
                InFlight[tmp] = true;
                Directory.CreateDirectory(tmp);
            }
            build(tmp);
            lock (Gate)
            {
                ThrowIfClosing();
                if (Directory.Exists(full)) Directory.Move(full, old);
                Directory.Move(tmp, full);
            }
        }
        catch (Exception e)
        {
            if (!Directory.Exists(full) && Directory.Exists(old)) Directory.Move(old, full);
            TryDeleteDir(tmp);
            if (DiskFullException.Of(e, full) is { } named) throw named;
            throw;
        }
        finally { InFlight.TryRemove(tmp, out _); }
        TryDeleteDir(old);
    }

    /// <summary>Temp files (false) and folders (true) of saves in progress, for <see cref="RemoveInFlight"/>.</summary>
    static readonly System.Collections.Concurrent.ConcurrentDictionary<string, bool> InFlight = new();

    /// <summary>
    /// Removes the temp files and folders of the saves in progress, putting back a folder's previous version if it was
    /// already set aside. For a process about to end without finishing them (`peft quantize`, `merge`, `export` on Ctrl-C
    /// or SIGTERM, whose default ending runs no finally block): a model-sized hidden temp file stayed beside the output.
    /// </summary>
    public static void RemoveInFlight()
    {
        // Closing first, under the lock every creation and final rename takes: a writer still running on another thread
        // can then neither recreate a temp folder this removes (Write creates its folder) nor swap in a folder being
        // emptied. Without it, the temp folder came back between the removal and the process's end.
        lock (Gate) _closing = true;
        foreach (var (tmp, folder) in InFlight)
        {
            if (!folder) { TryDelete(tmp); continue; }
            TryDeleteDir(tmp);
            string old = tmp + ".old", full = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(tmp)!, TempName.Match(System.IO.Path.GetFileName(tmp)).Groups["name"].Value);
            try { if (Directory.Exists(old) && !Directory.Exists(full)) Directory.Move(old, full); }
            catch (IOException) { }
        }
    }

    static readonly object Gate = new();
    static volatile bool _closing;

    static void ThrowIfClosing()
    {
        if (_closing) throw new OperationCanceledException("interrupted: the process is ending and removed its temp files");
    }

    /// <summary>The temp names <see cref="Write"/> and <see cref="WriteFolder"/> use: .NAME.GUID.tmp and .NAME.GUID.tmp.old.</summary>
    static readonly System.Text.RegularExpressions.Regex TempName = new(@"^\.(?<name>.+)\.[0-9a-f]{32}\.tmp(?<old>\.old)?$");

    /// <summary>
    /// A fresh temp name for <paramref name="path"/> in its folder (.NAME.GUID.tmp), for a caller that stages a folder
    /// itself: <see cref="RemoveLeftovers"/> clears it, and messages name <paramref name="path"/> instead of it.
    /// </summary>
    public static string TempPathFor(string path)
    {
        string full = System.IO.Path.GetFullPath(path).TrimEnd('/');
        return System.IO.Path.Combine(System.IO.Path.GetDirectoryName(full)!, $".{System.IO.Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
    }

    /// <summary>
    /// <paramref name="path"/> as the user asked for it: every temp folder or file name in it (.NAME.GUID.tmp) replaced by
    /// the NAME it stands for, so /out/.merged.GUID.tmp/.model.safetensors.GUID.tmp reads /out/merged/model.safetensors.
    /// </summary>
    public static string Destination(string path) =>
        string.Join('/', path.Split('/').Select(part => TempName.Match(part) is { Success: true } m ? m.Groups["name"].Value : part));

    /// <summary>
    /// Removes what interrupted saves left in <paramref name="dir"/> (a temp file or folder can be model-sized). A
    /// previous folder set aside as .old whose replacement never arrived is put back instead: it is the last complete one.
    /// Returns the names removed or restored. Call it only when nothing else is writing there.
    /// </summary>
    public static IReadOnlyList<string> RemoveLeftovers(string dir)
    {
        var done = new List<string>();
        if (!Directory.Exists(dir)) return done;
        foreach (var entry in Directory.EnumerateFileSystemEntries(dir).OrderByDescending(e => e.EndsWith(".old", StringComparison.Ordinal)).ToList())
        {
            var m = TempName.Match(System.IO.Path.GetFileName(entry));
            if (!m.Success) continue;
            string final = System.IO.Path.Combine(dir, m.Groups["name"].Value);
            if (m.Groups["old"].Success && Directory.Exists(entry) && !Directory.Exists(final) && !File.Exists(final)) Directory.Move(entry, final);
            else if (Directory.Exists(entry)) Directory.Delete(entry, recursive: true);
            else File.Delete(entry);
            done.Add(System.IO.Path.GetFileName(entry));
        }
        return done;
    }

    static void TryDelete(string p) { try { File.Delete(p); } catch (IOException) { } }
    // A file a writer had open when the folder was emptied can make the last rmdir see a non-empty folder: try again.
    static void TryDeleteDir(string p)
    {
        for (int attempt = 0; attempt < 5; attempt++)
        {
            try { if (Directory.Exists(p)) Directory.Delete(p, true); return; }
            catch (IOException) { Thread.Sleep(10); }
        }
    }
}

/// <summary>
/// A save that ran out of disk space (ENOSPC, a quota, Windows' disk full), named by the destination the user asked for
/// rather than the hidden temp file the error was raised on (".model.safetensors.GUID.tmp"). Thrown after the temp
/// file or folder is removed, so the message can say that nothing was left behind and how much is free now.
/// </summary>
internal sealed class DiskFullException : IOException
{
    DiskFullException(string message, Exception inner) : base(message, inner) { }

    /// <summary>The destination the message names (temp names resolved).</summary>
    public required string Destination { get; init; }

    /// <summary>
    /// <paramref name="e"/> as a disk-full error naming <paramref name="destination"/>, or null when it is another error or
    /// already one (an inner save named its file; the folder around it keeps that message).
    /// </summary>
    public static DiskFullException? Of(Exception e, string destination)
    {
        if (e is DiskFullException || e is not IOException io || !IsDiskFull(io)) return null;
        string named = AtomicFile.Destination(destination);
        return new DiskFullException($"{named}: no space left on device", e) { Destination = named };
    }

    /// <summary>Read when reported, after every enclosing save removed its partial output: the free space is what is left.</summary>
    public override string Message => $"{Destination}: no space left on device{FreeSpace(Destination)}; the save was undone, no partial output is left";

    // ENOSPC 28 and EDQUOT 122 are the HResult .NET gives an IOException from errno on Linux; the others are Windows'.
    static bool IsDiskFull(IOException e) => e.HResult is 28 or 122 or unchecked((int)0x80070070) or unchecked((int)0x80070027);

    static string FreeSpace(string path)
    {
        try
        {
            string? dir = System.IO.Path.GetDirectoryName(path);
            while (dir is not null && !Directory.Exists(dir)) dir = System.IO.Path.GetDirectoryName(dir);
            if (dir is null) return "";
            // On Unix DriveInfo takes any path and asks statvfs about the file system holding it.
            return $" ({new DriveInfo(dir).AvailableFreeSpace:N0} bytes free there now)";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException) { return ""; }
    }
}
