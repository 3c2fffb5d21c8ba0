using PeftSharp.IO;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO;

public class TensorChunksTests
{
    [Theory]
    [InlineData(7, 5, 40)]      // 20-byte rows, 2 per chunk: 4 chunks, the last one row
    [InlineData(7, 5, 10)]      // a row larger than the limit: one row per chunk
    [InlineData(7, 5, 1000)]    // all of it in one view
    public void RowChunksCoverTheTensorInOrderWithWholeRows(int rows, int cols, long maxBytes)
    {
        using var t = ScalarArgs.Arange(rows * cols, ScalarType.Float32, CPU).reshape(rows, cols);
        var seen = new List<byte>();
        int chunks = 0;
        foreach (var view in TensorChunks.Rows(t, maxBytes))
            using (view)
            {
                chunks++;
                Assert.Equal(cols, view.shape[1]);
                Assert.True(view.shape[0] == 1 || view.NumberOfElements * 4 <= maxBytes);
                seen.AddRange(view.bytes.ToArray());
            }
        Assert.Equal(t.bytes.ToArray(), seen);
        Assert.Equal(maxBytes >= rows * cols * 4 ? 1 : (int)Math.Ceiling(rows / (double)Math.Max(1, maxBytes / (cols * 4))), chunks);
    }
}
