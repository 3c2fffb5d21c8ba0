using PeftSharp.Training.Optim;
using TorchSharp.Modules;
using static TorchSharp.torch;
using AdamW = PeftSharp.Training.Optim.AdamW;

namespace PeftSharp.Tests.Training.Optim;

public class ResumeTests
{
    [Theory]
    [MemberData(nameof(OptimizerKinds.All), MemberType = typeof(OptimizerKinds))]
    public void SaveLoadContinueIsBitIdenticalToAnUninterruptedRun(string kind)
    {
        string dir = TestPaths.TempDir();
        using var problem = new RegressionProblem();
        var straight = problem.Parameters;
        using var opt = OptimizerKinds.Create(kind, straight, Path.Combine(dir, "a"));
        problem.Train(opt, straight, 7);
        opt.LearningRate = 4e-3; // as a schedule would have set it
        string statePath = Path.Combine(dir, "optimizer.safetensors");
        opt.SaveState(statePath);
        var resumed = problem.CloneParameters();
        problem.Train(opt, straight, 8);

        using var opt2 = OptimizerKinds.Create(kind, resumed, Path.Combine(dir, "b"));
        opt2.LoadState(statePath);
        Assert.Equal(4e-3, opt2.LearningRate);
        problem.Train(opt2, resumed, 8);

        RegressionProblem.AssertBitIdentical(straight, resumed);
        // Without the restored state the continuation differs: the test can tell.
        var fresh = problem.CloneParameters();
        using var opt3 = OptimizerKinds.Create(kind, fresh, Path.Combine(dir, "c"));
        problem.Train(opt3, fresh, 1);
        problem.Train(opt, straight, 1);
        Assert.False(fresh[0].Param.bytes.SequenceEqual(straight[0].Param.bytes));
    }

    [Fact]
    public void LoadingStateOfOtherParameterNamesFailsNamingThem()
    {
        string dir = TestPaths.TempDir();
        using var problem = new RegressionProblem();
        using var opt = new AdamW(problem.Parameters);
        problem.Train(opt, problem.Parameters, 1);
        string path = Path.Combine(dir, "state.safetensors");
        opt.SaveState(path);

        var renamed = problem.Parameters.Select(p => (p.Name == "head.w2" ? "head.w3" : p.Name, p.Param)).ToList();
        using var other = new AdamW(renamed);
        var ex = Assert.Throws<InvalidDataException>(() => other.LoadState(path));
        Assert.Contains("'head.w3'", ex.Message);
        Assert.Contains("'head.w2'", ex.Message);
    }

    [Fact]
    public void LoadingStateOfOtherShapesFailsNamingTheTensor()
    {
        string dir = TestPaths.TempDir();
        using var problem = new RegressionProblem();
        using var opt = new AdamW(problem.Parameters);
        string path = Path.Combine(dir, "state.safetensors");
        opt.SaveState(path);

        using var bigger = new RegressionProblem(outDim: 17);
        using var other = new AdamW(bigger.Parameters);
        var ex = Assert.Throws<InvalidDataException>(() => other.LoadState(path));
        Assert.Contains("'head.w2.exp_avg'", ex.Message);
        Assert.Contains("[16, 96]", ex.Message);
    }

    [Fact]
    public void LoadingStateOfAnotherOptimiserKindFails()
    {
        string dir = TestPaths.TempDir();
        using var problem = new RegressionProblem();
        using var opt = new AdamW(problem.Parameters);
        string path = Path.Combine(dir, "state.safetensors");
        opt.SaveState(path);
        using var other = new AdamW8bit(problem.Parameters);
        var ex = Assert.Throws<InvalidDataException>(() => other.LoadState(path));
        Assert.Contains("saved by AdamW, this is AdamW8bit", ex.Message);
    }

    [Fact]
    public void PagedAndUnpagedStateFilesAreInterchangeable()
    {
        string dir = TestPaths.TempDir();
        using var problem = new RegressionProblem();
        using var opt = new PagedAdamW(problem.Parameters, Path.Combine(dir, "paged"));
        problem.Train(opt, problem.Parameters, 3);
        string path = Path.Combine(dir, "state.safetensors");
        opt.SaveState(path);
        var copy = problem.CloneParameters();
        using var plain = new AdamW(copy);
        plain.LoadState(path);
        problem.Train(opt, problem.Parameters, 2);
        problem.Train(plain, copy, 2);
        RegressionProblem.AssertBitIdentical(problem.Parameters, copy);
    }
}
