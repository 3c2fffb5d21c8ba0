namespace PeftSharp.Training;

/// <summary>
/// Resident memory of this process, from /proc/self/status on Linux: VmRSS (now) and VmHWM (the peak, "high
/// water mark", since the process started). It counts everything resident: libtorch tensors, the .NET heap and
/// memory-mapped weights that were touched. Elsewhere, the .NET process working-set counters.
/// </summary>
public static class ProcessMemory
{
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
