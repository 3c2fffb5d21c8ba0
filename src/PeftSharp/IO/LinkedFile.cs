namespace PeftSharp.IO;

/// <summary>
/// Sizes of files that may be symlinks. A Hugging Face cache snapshot holds links (`snapshots/&lt;commit&gt;/config.json
/// -> ../../blobs/&lt;etag&gt;`), and on Unix <see cref="FileInfo.Length"/> is the length of the link itself, not of the
/// file it points to. Opening the path follows every link, so the length is the target's.
/// </summary>
internal static class LinkedFile
{
    public static long Length(string path)
    {
        using var handle = File.OpenHandle(path);
        return RandomAccess.GetLength(handle);
    }
}
