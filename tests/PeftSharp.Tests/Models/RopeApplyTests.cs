using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

public class RopeApplyTests
{
    /// <summary>HF's apply_rotary_pos_emb: x * cos + rotate_half(x) * sin, rotate_half = cat(-x2, x1).</summary>
    static Tensor Textbook(Tensor x, Tensor cos, Tensor sin)
    {
        long rd = cos.shape[^1], half = rd / 2;
        var xr = x.narrow(-1, 0, rd);
        var rotated = (xr * cos).Plus(cat([xr.narrow(-1, half, half).neg(), xr.narrow(-1, 0, half)], -1) * sin);
        return rd == x.shape[^1] ? rotated : cat([rotated, x.narrow(-1, rd, x.shape[^1] - rd)], -1);
    }

    [Theory]
    [InlineData(16, 16)]   // full rotary
    [InlineData(16, 8)]    // Phi's partial rotary: the last 8 dims pass through
    public void RotationAndItsGradientMatchTheTextbookFormToOneRounding(int headDim, int rotaryDim)
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        var c = new ModelConfig
        {
            Shape = new Memory.ModelConfig { ModelType = "llama", HiddenSize = 4 * headDim, IntermediateSize = 8 * headDim, NumHiddenLayers = 1, NumAttentionHeads = 4, NumKeyValueHeads = 4, HeadDim = headDim, VocabSize = 32 },
            RotaryDim = rotaryDim,
        };
        var (cos, sin) = new Rope(c).CosSin(ScalarArgs.Arange(3, 10, ScalarType.Int64, CPU).unsqueeze(0).expand(2, 7), ScalarType.Float32);
        var x = randn(2, 4, 7, headDim).requires_grad_(true);
        var xt = x.detach().clone().requires_grad_(true);
        var r = randn(2, 4, 7, headDim);
        var y = Rope.Apply(x, cos, sin);
        var yt = Textbook(xt, cos, sin);
        // addcmul_ fuses the multiply-add (one rounding instead of two): equal to within float32's last bits.
        Assert.True(TestPaths.MaxAbsError(y, yt) <= 1e-6);
        if (rotaryDim < headDim)   // the dims past the rotary ones pass through untouched
            Assert.True(TestPaths.MaxAbsError(y.narrow(-1, rotaryDim, headDim - rotaryDim), x.narrow(-1, rotaryDim, headDim - rotaryDim)) == 0);
        (y * r).sum().backward();
        (yt * r).sum().backward();
        Assert.True(TestPaths.MaxAbsError(x.grad!, xt.grad!) <= 1e-6);
    }
}
