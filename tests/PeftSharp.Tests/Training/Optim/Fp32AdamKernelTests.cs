using PeftSharp.Training.Optim;
using static TorchSharp.torch;
using AdamW = PeftSharp.Training.Optim.AdamW;

namespace PeftSharp.Tests.Training.Optim;

/// <summary>
/// The fused CPU AdamW step (Fp32AdamKernel) against the in-place libtorch ops it replaced on the CPU (AdamW.Fp32UpdateOps,
/// still the path on other devices): the same parameters and moments to rounding over several steps, on a length that
/// spans several work items, the 8-lane body and a scalar tail, with and without weight decay.
/// </summary>
public class Fp32AdamKernelTests
{
    [Theory]
    [InlineData(0.01)]
    [InlineData(0.0)]
    public void TheFusedStepMatchesTheOpPath(double weightDecay)
    {
        const long n = 3 * 65536 + 13;
        var o = new AdamWOptions(2e-3, 0.9, 0.999, 1e-8, weightDecay);
        var g = new Generator(11);
        using var p0 = randn([n], generator: g);
        using var fusedP = p0.clone();
        using var opsP = p0.clone();
        using var fusedM = zeros(n);
        using var fusedV = zeros(n);
        using var opsM = zeros(n);
        using var opsV = zeros(n);
        for (long step = 1; step <= 5; step++)
        {
            using var grad = randn([n], generator: g);
            Assert.True(Fp32AdamKernel.Applies(fusedP, grad, fusedM, fusedV));
            Fp32AdamKernel.Step(fusedP, grad, fusedM, fusedV, step, o.LearningRate, o);
            using (NewDisposeScope()) AdamW.Fp32UpdateOps(opsP, grad, opsM, opsV, step, o.LearningRate, o);
        }
        AssertClose(opsM, fusedM, "exp_avg");
        AssertClose(opsV, fusedV, "exp_avg_sq");
        AssertClose(opsP, fusedP, "parameter");
        Assert.True(TestPaths.MaxAbsError(fusedP, p0) > 5e-3, "the parameters moved");
    }

    [Fact]
    public void OtherTensorsTakeTheOpPath()
    {
        using var p = zeros(8, 4);
        using var m = zeros(8, 4);
        using var v = zeros(8, 4);
        using var gradT = zeros(4, 8);
        using var transposed = gradT.t();   // a non-contiguous gradient
        using var doubles = zeros([8, 4], ScalarType.Float64);
        Assert.False(Fp32AdamKernel.Applies(p, transposed, m, v));
        Assert.False(Fp32AdamKernel.Applies(doubles, doubles, doubles, doubles));
        Assert.True(Fp32AdamKernel.Applies(p, p, m, v));
    }

    /// <summary>
    /// Within 1e-6 of the tensor's largest magnitude: the two paths round differently (libtorch's vectorised ops fuse some
    /// multiply-adds), which moves a moment whose two terms nearly cancel by ~1e-8 absolute, so a per-element relative bound
    /// would measure the cancellation. A wrong constant shows far above this (the weight decay alone moves parameters by
    /// lr x wd = 2e-5 of their size per step; a bias correction, by ~lr).
    /// </summary>
    static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        using var scope = NewDisposeScope();
        double worst = (expected - actual).abs().max().item<float>(), scale = expected.abs().max().item<float>();
        Assert.True(worst <= 1e-6 * scale, $"{what}: worst difference {worst:E2} from the op path (largest value {scale:E2})");
    }
}
