using PeftSharp.Kernels;

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
}
