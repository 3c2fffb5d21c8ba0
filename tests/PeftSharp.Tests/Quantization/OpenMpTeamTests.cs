using PeftSharp.Quantization;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// The tiled QLoRA matmul runs its tiles on torch's OpenMP team (<see cref="OpenMpTeam"/>): each slot once, on
/// threads of their own where the team exists, with the caller's grad mode, failures back to the caller; and a tiled
/// backward that splits its tiles over the team adds the same partial sums every time.
/// </summary>
public class OpenMpTeamTests
{
    [Fact]
    public void EachSlotRunsOnceAndTheTeamRunsThemAtTheSameTime()
    {
        int team = Math.Max(2, OpenMpTeam.Size);
        var runs = new int[team];
        var threads = new int[team];
        // Where the team exists, every slot must wait here for all the others: run one after another, they would time out.
        using var together = new Barrier(OpenMpTeam.Size >= team ? team : 1);
        bool met = true;
        OpenMpTeam.Run(team, slot =>
        {
            Interlocked.Increment(ref runs[slot]);
            threads[slot] = Environment.CurrentManagedThreadId;
            if (!together.SignalAndWait(TimeSpan.FromSeconds(20))) met = false;
        });
        Assert.All(runs, r => Assert.Equal(1, r));
        Assert.True(met, "the slots did not run at the same time");
        if (OpenMpTeam.Size >= team) Assert.Equal(team, threads.Distinct().Count());
        // On this project's Linux x64 CI and bench box libtorch links libgomp and has two or more threads.
        if (OperatingSystem.IsLinux() && Environment.ProcessorCount >= 2 && get_num_threads() >= 2) Assert.True(OpenMpTeam.Size >= 2, "libtorch's OpenMP team was not found");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TeamThreadsTakeTheCallersGradMode(bool grad)
    {
        var seen = new bool[2];
        using (enable_grad(grad))
            OpenMpTeam.Run(2, slot => seen[slot] = is_grad_enabled());
        Assert.All(seen, s => Assert.Equal(grad, s));
    }

    [Fact]
    public void AFailingSlotFailsTheCall()
    {
        var e = Assert.Throws<InvalidOperationException>(() => OpenMpTeam.Run(2, slot => { if (slot == 1) throw new InvalidOperationException("slot 1"); }));
        Assert.Equal("slot 1", e.Message);
    }

    [Fact]
    public void TheTiledBackwardGivesTheSameBitsEveryTime()
    {
        using var scope = NewDisposeScope();
        manual_seed(14);
        using var w = Nf4Weight.FromDense(randn(2600, 640) * 0.05);   // 6.7 MB in fp32: several tiles per thread
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
