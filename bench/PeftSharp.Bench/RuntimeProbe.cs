using System.Runtime.InteropServices;

namespace PeftSharp.Bench;

/// <summary>
/// What a CPU process holds besides tensors, at one moment: resident set, OS threads, the .NET GC's committed heap, and
/// glibc's malloc figures (mallinfo2: bytes its arenas took from the OS, bytes in use there, bytes in mmapped blocks).
/// Used by the train-memory bench to split the runtime's share of the peak into named terms.
/// </summary>
public static partial class RuntimeProbe
{
    [StructLayout(LayoutKind.Sequential)]
    struct MallInfo2
    {
        public nuint Arena, Ordblks, Smblks, Hblks, Hblkhd, Usmblks, Fsmblks, Uordblks, Fordblks, Keepcost;
    }

    [LibraryImport("libc", EntryPoint = "mallinfo2")]
    private static partial MallInfo2 mallinfo2();

    public sealed record Sample(long Rss, long Peak, int Threads, long ManagedHeap, long ManagedCommitted, int Gen0Collections, long MallocArena, long MallocInUse, long MallocMmapped);

    public static Sample Take()
    {
        var (rss, peak) = PeftSharp.Training.ProcessMemory.Read();
        int threads = 0;
        if (File.Exists("/proc/self/status"))
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("Threads:", StringComparison.Ordinal)) threads = int.Parse(line[8..].Trim());
        long arena = 0, inUse = 0, mmapped = 0;
        try { var m = mallinfo2(); arena = (long)m.Arena; inUse = (long)m.Uordblks; mmapped = (long)m.Hblkhd; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        return new Sample(rss, peak, threads, GC.GetTotalMemory(false), GC.GetGCMemoryInfo().TotalCommittedBytes, GC.CollectionCount(0), arena, inUse, mmapped);
    }
}
