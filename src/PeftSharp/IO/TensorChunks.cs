using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>
/// A contiguous tensor as views of whole leading-dimension rows of at most <c>maxBytes</c> each (one row may be
/// larger), so no byte span passed to a reader, a stream or a hash reaches the 2 GiB limit of Span. The caller
/// disposes every view.
/// </summary>
internal static class TensorChunks
{
    public const long DefaultMaxBytes = 1L << 30;

    public static IEnumerable<Tensor> Rows(Tensor contiguous, long maxBytes = DefaultMaxBytes)
    {
        long bytes = contiguous.NumberOfElements * contiguous.ElementSize;
        if (bytes <= maxBytes || contiguous.dim() == 0)
        {
            yield return contiguous.alias();
            yield break;
        }
        long rows = contiguous.shape[0], step = Math.Max(1, maxBytes / (bytes / rows));
        for (long r = 0; r < rows; r += step) yield return contiguous.narrow(0, r, Math.Min(step, rows - r));
    }
}
