using PeftSharp.Quantization;
using PeftSharp.Tests.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// The memory side of tiled dequantisation (<see cref="TiledDequantTests"/>: the numbers). Serial: a
/// <see cref="DequantReuse"/> budget another test sets would route the weights through kept buffers instead.
/// </summary>
[Collection(SerialCollection.Name)]
public class TiledScratchTests
{
    /// <summary>
    /// What tiling is for: the per-thread scratch buffer the dense weight goes through holds one tile, not the weight
    /// (the planner counts one tile). fp32 forward and backward both tile; in bf16 the forward tiles and the backward
    /// multiplies by the whole weight (so the scratch grows to it). On a fresh thread, whose scratch starts empty.
    /// In fp32 with MKL's pack API the tiles are written into MKL's packed layout instead (Nf4PanelTile): each team slot's
    /// shared pages hold one tile plus the layout's padding (at most 12% at the shapes measured) and a page of slack.
    /// </summary>
    [Theory]
    [InlineData(ScalarType.Float32, true, false)]
    [InlineData(ScalarType.BFloat16, false, false)]
    [InlineData(ScalarType.BFloat16, true, true)]
    public void TheScratchBufferHoldsOneTileNotTheWeight(ScalarType dtype, bool backward, bool wholeWeight)
    {
        long scratch = 0, weightBytes = 0;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var scope = NewDisposeScope();
                manual_seed(13);
                using var w = Nf4Weight.FromDense(randn(2208, 640).Times(0.05));   // rows in 16s, so every tile can take the panel layout
                weightBytes = 2208L * 640 * (dtype == ScalarType.Float32 ? 4 : 2);
                var x = randn(2, 9, 640).to_type(dtype).requires_grad_(backward);
                var y = w.Linear(x, dtype);
                if (backward) y.sum().backward();
                scratch = QuantizedLinearFunction.ScratchBytes;
                QuantizedLinearFunction.ReleaseScratch();
            }
            catch (Exception e) { failure = e; }
        });
        thread.Start();
        thread.Join();
        Assert.Null(failure);
        Assert.True(weightBytes > QuantizedLinearFunction.TileBytes, "the weight must span more than one tile");
        if (wholeWeight) Assert.Equal(weightBytes, scratch);
        else Assert.InRange(scratch, 1, QuantizedLinearFunction.TileBytes * 9 / 8 + 2 * 2 * 4096);
    }
}
