using PeftSharp.Training.Optim;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using AdamW = PeftSharp.Training.Optim.AdamW;

namespace PeftSharp.Tests.Training.Optim;

public class AdamWTests
{
    [Theory]
    [InlineData(1e-2, 0.01)]
    [InlineData(3e-3, 0.0)]
    public void MatchesTorchSharpAdamW(double lr, double weightDecay)
    {
        using var problem = new RegressionProblem();
        var ours = problem.Parameters;
        var theirs = problem.CloneParameters();
        var options = new AdamWOptions(lr, 0.9, 0.999, 1e-8, weightDecay);
        using var opt = new AdamW(ours, options);
        using var reference = torch.optim.AdamW(theirs.Select(p => p.Param), lr, 0.9, 0.999, 1e-8, weightDecay, false, false);
        long fused = Fp32AdamKernel.StepsOnThisThread;
        for (int step = 0; step < 12; step++)
        {
            problem.Backward(ours);
            problem.Backward(theirs);
            opt.Step();
            reference.step();
        }
        for (int i = 0; i < ours.Count; i++)
        {
            double err = TestPaths.MaxAbsError(ours[i].Param, theirs[i].Param);
            Assert.True(err < 1e-6, $"{ours[i].Name}: max abs error {err} vs torch.optim.AdamW");
        }
        // On the CPU every parameter went through the fused kernel (12 steps x 3 tensors), not the op path.
        Assert.Equal(12 * ours.Count, Fp32AdamKernel.StepsOnThisThread - fused);
        // The parameters moved: the comparison is not between two untouched copies.
        Assert.True(TestPaths.MaxAbsError(ours[1].Param, zeros(96)) > 10 * lr);
    }

    [Fact]
    public void StateBytesAreTwoFp32MomentsPerParameter()
    {
        using var problem = new RegressionProblem();
        using var opt = new AdamW(problem.Parameters);
        long n = problem.Parameters.Sum(p => p.Param.NumberOfElements);
        Assert.Equal(8 * n, opt.StateBytes);
        Assert.Equal(8 * n, opt.ResidentStateBytes);
    }

    [Fact]
    public void ParametersWithoutGradientAreLeftAlone()
    {
        using var problem = new RegressionProblem();
        var frozen = new Parameter(ones(5));
        var ps = problem.Parameters.Append(("frozen", frozen)).ToList();
        using var opt = new AdamW(ps, new AdamWOptions(WeightDecay: 0.1));
        problem.Train(opt, problem.Parameters, 3);
        Assert.Equal(0.0, TestPaths.MaxAbsError(frozen, ones(5)));
    }

    [Fact]
    public void RejectsDuplicateNames()
    {
        using var problem = new RegressionProblem();
        var ps = problem.Parameters.Append(("layer.w1", problem.Parameters[1].Param)).ToList();
        var ex = Assert.Throws<ArgumentException>(() => new AdamW(ps));
        Assert.Contains("'layer.w1'", ex.Message);
    }

    // Thread-local, so tests running in parallel on other threads do not disturb it.
    static long LiveTensors() => DisposeScopeManager.Statistics.ThreadTotalLiveCount;

    [Fact]
    public void LiveTensorCountStaysFlat()
    {
        using var problem = new RegressionProblem();
        var dir = TestPaths.TempDir();
        foreach (var make in new Func<IOptimizer>[]
        {
            () => new AdamW(problem.Parameters),
            () => new AdamW8bit(problem.Parameters),
            () => new PagedAdamW(problem.Parameters, Path.Combine(dir, "a")),
            () => new PagedAdamW8bit(problem.Parameters, Path.Combine(dir, "b"), stage: true),
        })
        {
            using var opt = make();
            problem.Train(opt, problem.Parameters, 3);
            long before = LiveTensors();
            problem.Train(opt, problem.Parameters, 50);
            opt.ZeroGrad();
            Assert.Equal(before, LiveTensors());
        }
    }
}
