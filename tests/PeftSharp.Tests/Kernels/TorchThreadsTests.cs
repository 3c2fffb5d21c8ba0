using PeftSharp.Kernels;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Kernels;

public class TorchThreadsTests
{
    [Fact]
    public void EveryIndexRunsOnceOnLibtorchsOpenMpTeam()
    {
        // TorchSharp-cpu's Linux libtorch links libgomp: the loop must find it, or kernels fall back to .NET threads
        // that fight libgomp's spinning workers for the cores.
        if (OperatingSystem.IsLinux()) Assert.True(TorchThreads.OnOpenMp);
        var hits = new int[1000];
        TorchThreads.For(hits.Length, 2, i => Interlocked.Increment(ref hits[i]));
        Assert.All(hits, h => Assert.Equal(1, h));
        Assert.Throws<InvalidOperationException>(() => TorchThreads.For(10, 2, i => { if (i == 7) throw new InvalidOperationException("seven"); }));
    }

    [Fact]
    public void EachSlotRunsOnceAndTheTeamRunsThemAtTheSameTime()
    {
        int team = Math.Max(2, TorchThreads.Size);
        var runs = new int[team];
        var threads = new int[team];
        // Where the team exists, every slot must wait here for all the others: run one after another, they would time out.
        using var together = new Barrier(TorchThreads.Size >= team ? team : 1);
        bool met = true;
        TorchThreads.For(team, team, slot =>
        {
            Interlocked.Increment(ref runs[slot]);
            threads[slot] = Environment.CurrentManagedThreadId;
            if (!together.SignalAndWait(TimeSpan.FromSeconds(20))) met = false;
        });
        Assert.All(runs, r => Assert.Equal(1, r));
        Assert.True(met, "the slots did not run at the same time");
        if (TorchThreads.Size >= team) Assert.Equal(team, threads.Distinct().Count());
        // On this project's Linux x64 CI and bench box libtorch links libgomp and has two or more threads.
        if (OperatingSystem.IsLinux() && Environment.ProcessorCount >= 2 && get_num_threads() >= 2) Assert.True(TorchThreads.Size >= 2, "libtorch's OpenMP team was not found");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TeamThreadsTakeTheCallersGradMode(bool grad)
    {
        var seen = new bool[2];
        using (enable_grad(grad))
            TorchThreads.For(2, 2, slot => seen[slot] = is_grad_enabled());
        Assert.All(seen, s => Assert.Equal(grad, s));
    }
}
