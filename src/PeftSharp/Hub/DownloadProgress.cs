namespace PeftSharp.Hub;

/// <summary>Bytes of one file on disk so far (a resumed download starts above zero) out of its size.</summary>
/// <param name="File">The file's name in the repo (e.g. model.safetensors).</param>
/// <param name="Done">Bytes on disk so far.</param>
/// <param name="Total">The file's size in bytes, as the Hub announced it.</param>
public readonly record struct DownloadProgress(string File, long Done, long Total);
