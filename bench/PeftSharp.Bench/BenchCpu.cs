namespace PeftSharp.Bench;

/// <summary>The CPU a bench ran on: model name and the instruction-set flags that decide its figures.</summary>
static class BenchCpu
{
    static readonly string[] Interesting = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni"];

    public static string Describe()
    {
        try
        {
            var lines = File.ReadLines("/proc/cpuinfo").Take(64).ToList();
            string model = lines.FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? "unknown";
            var flags = (lines.FirstOrDefault(l => l.StartsWith("flags"))?.Split(':', 2)[1] ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
            return $"{model}, {Environment.ProcessorCount} logical CPUs, flags: {string.Join(' ', Interesting.Where(flags.Contains))}";
        }
        catch (IOException) { return $"unknown CPU, {Environment.ProcessorCount} logical CPUs"; }
    }
}
