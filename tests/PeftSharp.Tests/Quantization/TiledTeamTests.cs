using PeftSharp.Kernels;
using PeftSharp.Quantization;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// The tiled QLoRA matmul runs its tiles on torch's OpenMP team (<see cref="TorchThreads"/>): a tiled backward that
/// splits its tiles over the team adds the same partial sums every time.
/// </summary>
public class TiledTeamTests
{
    [Fact]
    public void TheTiledBackwardGivesTheSameBitsEveryTime()
    {
        using var scope = NewDisposeScope();
        manual_seed(14);
        using var w = Nf4Weight.FromDense(randn(2600, 640).Times(0.05));   // 6.7 MB in fp32: several tiles per thread
        Assert.True(w.Shape[0] * w.Shape[1] * 4 > QuantizedLinearFunction.TileBytes, "the weight must span more than one tile");
        var r = randn(3, 7, 2600);
        Tensor GradX()
        {
            var x = ones(3, 7, 640).requires_grad_(true);
            (w.Linear(x, ScalarType.Float32) * r).sum().backward();
            return x.grad!.clone();
        }
        var first = GradX();
        for (int i = 0; i < 5; i++) Assert.True(GradX().equal(first).all().item<bool>(), $"run {i + 2} differs from the first");
    }
}
