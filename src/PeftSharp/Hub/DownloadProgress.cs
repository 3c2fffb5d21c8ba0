namespace PeftSharp.Hub;

/// <summary>Bytes of one file on disk so far (a resumed download starts above zero) out of its size.</summary>
public readonly record struct DownloadProgress(string File, long Done, long Total);
