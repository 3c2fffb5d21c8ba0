namespace PeftSharp.Hub;

/// <summary>
/// The per-blob lock huggingface_hub takes around a download (`.locks/models--ORG--NAME/&lt;etag&gt;.lock`, a filelock).
/// filelock's Unix lock is flock(LOCK_EX | LOCK_NB) on the file, and so is .NET's FileShare.None on Unix, so a Python
/// download and ours of the same blob wait for each other.
/// </summary>
internal sealed class HubLock : IDisposable
{
    readonly FileStream _stream;

    HubLock(FileStream stream) => _stream = stream;

    public static async Task<HubLock> AcquireAsync(string path, Action? onWait, CancellationToken ct)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        bool told = false;
        while (true)
        {
            try { return new HubLock(new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None)); }
            catch (IOException) when (!ct.IsCancellationRequested)
            {
                if (!told) { onWait?.Invoke(); told = true; }
                await Task.Delay(100, ct);
            }
        }
    }

    public void Dispose() => _stream.Dispose();
}
