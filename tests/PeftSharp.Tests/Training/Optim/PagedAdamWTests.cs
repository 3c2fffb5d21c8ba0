using PeftSharp.Training.Optim;
using TorchSharp.Modules;
using static TorchSharp.torch;
using AdamW = PeftSharp.Training.Optim.AdamW;

namespace PeftSharp.Tests.Training.Optim;

public class PagedAdamWTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void FollowsTheSameTrajectoryAsInMemoryState(bool stage)
    {
        using var problem = new RegressionProblem();
        var paged = problem.CloneParameters();
        using var plain = new AdamW(problem.Parameters, new AdamWOptions(1e-2));
        using var opt = new PagedAdamW(paged, TestPaths.TempDir(), new AdamWOptions(1e-2), stage);
        problem.Train(plain, problem.Parameters, 10);
        problem.Train(opt, paged, 10);
        RegressionProblem.AssertBitIdentical(problem.Parameters, paged);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Paged8BitFollowsTheSameTrajectoryAsInMemory8Bit(bool stage)
    {
        using var problem = new RegressionProblem();
        var paged = problem.CloneParameters();
        using var plain = new AdamW8bit(problem.Parameters, new AdamWOptions(1e-2));
        using var opt = new PagedAdamW8bit(paged, TestPaths.TempDir(), new AdamWOptions(1e-2), stage);
        problem.Train(plain, problem.Parameters, 10);
        problem.Train(opt, paged, 10);
        RegressionProblem.AssertBitIdentical(problem.Parameters, paged);
        // Resident: w1's codes (12288 B x 2) and block scales (48 x 4 B x 2), the largest single parameter's state.
        Assert.Equal(2 * 12288 + 2 * 48 * 4, opt.ResidentStateBytes);
    }

    [Fact]
    public void StateLivesInMappedFilesAndOnlyOneParametersStateIsResident()
    {
        string dir = TestPaths.TempDir();
        var ps = Enumerable.Range(0, 8).Select(i => ($"layers.{i}.w", new Parameter(randn(64, 64)))).ToList();
        using var opt = new PagedAdamW(ps, dir);
        Assert.Equal(8L * 8 * 64 * 64, opt.StateBytes);
        Assert.Equal(8L * 64 * 64, opt.ResidentStateBytes); // one parameter's two fp32 moments
        string file = Assert.Single(Directory.GetFiles(dir));
        Assert.True(new FileInfo(file).Length >= opt.StateBytes);

        // The update really writes through the mapping: the file holds the moments after a step.
        foreach (var (_, p) in ps) p.grad = ones(64, 64);
        opt.Step();
        opt.SaveState(Path.Combine(TestPaths.TempDir(), "s.safetensors"));
        var bytes = File.ReadAllBytes(file);
        float first = BitConverter.ToSingle(bytes, 0);
        Assert.Equal(0.1f, first, 6); // exp_avg after one step with grad 1: (1 - beta1) * 1

        opt.Dispose();
        Assert.False(File.Exists(file));
    }

    [Fact]
    public void Paged8BitKeepsBothCodesAndScalesInFiles()
    {
        string dir = TestPaths.TempDir();
        using var problem = new RegressionProblem();
        using var opt = new PagedAdamW8bit(problem.Parameters, dir);
        Assert.True(opt.ResidentStateBytes < opt.StateBytes); // (state is allocated on first use)
        Assert.Equal(2, Directory.GetFiles(dir).Length); // u8 codes; f32 absmax and small-tensor moments
    }
}
