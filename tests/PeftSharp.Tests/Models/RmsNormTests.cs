using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

public class RmsNormTests
{
    /// <summary>HF LlamaRMSNorm through plain autograd ops: weight * (x * rsqrt(mean(x^2) + eps)) in fp32, cast back.</summary>
    static Tensor Textbook(Tensor x, Tensor weight, double eps)
    {
        var xf = x.to_type(ScalarType.Float32);
        return weight * (xf * (xf.pow(2).mean([-1L], keepdim: true) + eps).rsqrt()).to_type(x.dtype);
    }

    [Theory]
    [InlineData(ScalarType.Float32, 1e-6, 1e-5)]
    // bf16: both sides round g * w and the result to bf16 the same way; the sums inside differ in order.
    [InlineData(ScalarType.BFloat16, 0.0, 1e-2)]
    public void OutputAndInputGradientMatchThePlainAutogradGraph(ScalarType dtype, double outTol, double gradTol)
    {
        using var scope = NewDisposeScope();
        manual_seed(21);
        var norm = new RmsNorm("norm", 48, 1e-5, dtype);
        using (no_grad()) norm.weight.copy_(rand(48) + 0.5);
        var x = (randn(2, 5, 48) * 3).to_type(dtype).requires_grad_(true);
        var xt = x.detach().clone().requires_grad_(true);
        var r = randn(2, 5, 48).to_type(dtype);
        var y = norm.forward(x);
        var yt = Textbook(xt, norm.weight, 1e-5);
        Assert.Equal(dtype, y.dtype);
        Assert.True(TestPaths.MaxAbsError(y, yt) <= outTol);
        (y * r).sum().backward();
        (yt * r).sum().backward();
        Assert.True(TestPaths.RelativeError(x.grad!, xt.grad!) <= gradTol, $"relative error {TestPaths.RelativeError(x.grad!, xt.grad!)}");
    }

    [Fact]
    public void WithoutGradientTheOutputIsTheSame()
    {
        using var scope = NewDisposeScope();
        manual_seed(22);
        var norm = new RmsNorm("norm", 32, 1e-6, ScalarType.Float32);
        var x = randn(3, 32).requires_grad_(true);
        var y = norm.forward(x);
        Tensor z;
        using (no_grad()) z = norm.forward(x);
        Assert.True(TestPaths.MaxAbsError(y, z) == 0);
    }
}
