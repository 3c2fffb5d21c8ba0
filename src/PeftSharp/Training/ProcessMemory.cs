namespace PeftSharp.Training;

/// <summary>
/// Resident memory of this process, from /proc/self/status on Linux: VmRSS (now) and VmHWM (the peak, "high
/// water mark", since the process started). It counts everything resident: libtorch tensors, the .NET heap and
/// memory-mapped weights that were touched. Elsewhere, the .NET process working-set counters.
/// </summary>
internal static partial class ProcessMemory
{
    /// <summary>glibc's mallopt parameter for the mmap threshold.</summary>
    const int MMmapThreshold = -3;

    /// <summary>
    /// Makes glibc serve every allocation of at least <paramref name="thresholdBytes"/> (default 128 KiB) with its own
    /// mapping, returned to the OS when freed. By default glibc raises that threshold to the size of each freed
    /// mapping (up to 32 MiB), after which freed tensor buffers stay in its heaps and the resident set of a training
    /// step grows hundreds of MB past the live tensors. Call once at process start. False where glibc is absent.
    /// Training processes call Native/TensorAllocator.Ensure instead, which sets this and reuses libtorch's buffers on
    /// top of it (every step would otherwise map and zero all its large buffers afresh).
    /// </summary>
    public static bool ReturnLargeFreesToOs(int thresholdBytes = 128 * 1024)
    {
        if (!OperatingSystem.IsLinux()) return false;
        try { return mallopt(MMmapThreshold, thresholdBytes) == 1; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return false; }
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int mallopt(int param, int value);

    public static (long RssBytes, long PeakRssBytes) Read()
    {
        const string status = "/proc/self/status";
        if (File.Exists(status))
        {
            long rss = 0, hwm = 0;
            foreach (var line in File.ReadLines(status))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = KiB(line);
                else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = KiB(line);
            }
            return (rss, hwm);
        }
        using var p = System.Diagnostics.Process.GetCurrentProcess();
        return (p.WorkingSet64, p.PeakWorkingSet64);
    }

    static long KiB(string line) => long.Parse(line.Split(':')[1].Trim().Split(' ')[0]) * 1024;
}
