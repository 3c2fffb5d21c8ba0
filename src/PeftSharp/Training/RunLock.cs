namespace PeftSharp.Training;

/// <summary>
/// One training process per run folder. Two `peft train --out DIR` started together both passed the "already holds a
/// run" check (nothing was written yet), then interleaved their steps in one metrics.jsonl, overwrote each other's
/// train-options.json, run-plan.json, checkpoints and final adapter, and each start's clean-up of interrupted saves could
/// delete the other's save in progress. The folder's lock file (<see cref="FileName"/>) is held with an exclusive
/// <c>flock</c> (.NET's FileShare.None on Unix) for the whole run; the kernel drops it when the process ends, however it
/// ends, so a killed run leaves no stale lock. Within one process the lock is counted, so the CLI (which writes its
/// options and plan before training) and the trainer under it both take it.
/// </summary>
internal sealed class RunLock : IDisposable
{
    /// <summary>The lock file in the run folder (empty; left in place: deleting a lock file races with its next taker).</summary>
    public const string FileName = ".peft-train.lock";

    sealed class Held(FileStream file, bool createdFolder)
    {
        public readonly FileStream File = file;
        public readonly bool CreatedFolder = createdFolder;
        public int Count;
    }

    static readonly Dictionary<string, Held> ByFolder = new(StringComparer.Ordinal);

    readonly string _key;
    bool _disposed;

    RunLock(string key) => _key = key;

    /// <summary>Takes the lock of <paramref name="outDir"/> (creating the folder), or throws naming the folder when
    /// another process holds it.</summary>
    public static RunLock Acquire(string outDir)
    {
        string key = Path.GetFullPath(outDir).TrimEnd(Path.DirectorySeparatorChar);
        lock (ByFolder)
        {
            if (!ByFolder.TryGetValue(key, out var held))
            {
                bool created = !Directory.Exists(key);
                Directory.CreateDirectory(key);
                string file = Path.Combine(key, FileName);
                FileStream stream;
                try { stream = new FileStream(file, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
                // A plain IOException on a lock file that is there (now: two starts at once both find none, and one
                // creates it first): its lock is held (.NET's sharing violation; the HResult differs by OS). Missing
                // folders, permissions and the like keep their own exception types.
                catch (IOException e) when (e.GetType() == typeof(IOException) && System.IO.File.Exists(file))
                {
                    throw new InvalidOperationException($"{outDir}: another training process is writing this run folder (it holds {FileName}); " +
                        "wait for it to end, or give another output folder");
                }
                ByFolder[key] = held = new Held(stream, created);
            }
            held.Count++;
        }
        return new RunLock(key);
    }

    public void Dispose()
    {
        lock (ByFolder)
        {
            if (_disposed) return;
            _disposed = true;
            var held = ByFolder[_key];
            if (--held.Count > 0) return;
            // A start that failed before writing anything (bad data, a refused folder) leaves no folder behind, as before the lock.
            bool onlyTheLock = held.CreatedFolder && Directory.EnumerateFileSystemEntries(_key).All(e => Path.GetFileName(e) == FileName);
            if (onlyTheLock) System.IO.File.Delete(held.File.Name);
            held.File.Dispose();
            ByFolder.Remove(_key);
            if (onlyTheLock) try { Directory.Delete(_key); } catch (IOException) { }   // another process wrote there meanwhile
        }
    }
}
