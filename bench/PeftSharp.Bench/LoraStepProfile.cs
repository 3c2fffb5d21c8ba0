using System.Diagnostics;
using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// lora-step --profile: where one LoRA step's wall time goes. Method (printed with the table): every section of the
/// forward is a stopwatch around libtorch calls made through <see cref="ForwardProfiler"/> (CPU ops run synchronously
/// on the calling thread, so the stopwatch is the op's time plus its managed wrapper); nested sections count
/// exclusively. The backward is one libtorch call (autograd runs natively; TorchSharp exposes no op-level profiler),
/// so it is one row. Managed time: GC pauses and allocations are measured; the managed wrapper + dispatch cost of the
/// ops is estimated as tensors created per step times the measured cost of one tiny op (a 1-element add).
/// </summary>
public static class LoraStepProfile
{
    public static int Run(LoraStep step, double flops, int warmup, int steps, double matmulGflops)
    {
        for (int i = 0; i < warmup; i++) step.Run();
        var profiler = new ForwardProfiler();
        var stats = DisposeScopeManager.Statistics;
        long Created() => stats.CreatedInScopeCount + stats.CreatedOutsideScopeCount;
        var proc = Process.GetCurrentProcess();
        var gcPause0 = GC.GetTotalPauseDuration();
        long alloc0 = GC.GetTotalAllocatedBytes(), created0 = Created();
        int gen0 = GC.CollectionCount(0);
        long faults0 = MinorFaults();
        var cpu0 = proc.TotalProcessorTime;
        ForwardProfiler.Current = profiler;
        long t0 = Stopwatch.GetTimestamp();
        var sw = Stopwatch.StartNew();
        try { for (int i = 0; i < steps; i++) step.Run(); }
        finally { ForwardProfiler.Current = null; }
        double wall = sw.Elapsed.TotalSeconds / steps;
        // The timed steps' window on CLOCK_MONOTONIC (.NET's Stopwatch clock on Linux), for `perf record -k CLOCK_MONOTONIC`:
        // bench/lora-step-perf.sh keeps the samples inside it (no model build, warmup or this table's own probes).
        if (Stopwatch.Frequency == 1_000_000_000)
            Console.Error.WriteLine($"perf window: {t0 / 1e9:F6} {Stopwatch.GetTimestamp() / 1e9:F6} steps {steps}");
        proc.Refresh();
        double cpu = (proc.TotalProcessorTime - cpu0).TotalSeconds / steps;
        double gcPause = (GC.GetTotalPauseDuration() - gcPause0).TotalSeconds / steps;
        double allocMb = (GC.GetTotalAllocatedBytes() - alloc0) / 1e6 / steps;
        double created = (double)(Created() - created0) / steps;
        double faults = (double)(MinorFaults() - faults0) / steps;
        double perOp = TinyOpSeconds();

        int threads = get_num_threads();
        Console.WriteLine($"lora-step profile: {steps} steps after {warmup} warmup, {threads} threads; mean per step {wall * 1e3:F1} ms " +
                          $"({flops / wall / 1e9:F1} GFLOP/s = {flops / wall / 1e9 / matmulGflops:P1} of a {matmulGflops:F1} GFLOP/s 2048^3 fp32 matmul)");
        Console.WriteLine("method: stopwatch sections around the forward's libtorch calls (CPU ops are synchronous; exclusive times of nested sections), " +
                          "the backward as one native call, the rest unattributed; a shared box inflates all rows alike");
        Console.WriteLine($"  {"section",-44} {"ms/step",9} {"share",7} {"calls/step",11}");
        double attributed = 0;
        foreach (var (kind, (s, n)) in profiler.Totals.OrderByDescending(kv => kv.Value.Seconds))
        {
            double ms = s / steps * 1e3;
            attributed += s / steps;
            Console.WriteLine($"  {kind,-44} {ms,9:F2} {s / steps / wall,7:P1} {(double)n / steps,11:F1}");
        }
        Console.WriteLine($"  {"(unattributed: step glue, item(), scopes)",-44} {(wall - attributed) * 1e3,9:F2} {(wall - attributed) / wall,7:P1}");
        Console.WriteLine($"managed vs native: process CPU {cpu * 1e3:F0} ms per {wall * 1e3:F0} ms step = {cpu / wall / threads:P0} of {threads} threads busy; " +
                          $"GC pauses {gcPause * 1e3:F2} ms/step ({GC.CollectionCount(0) - gen0} gen0 collections in {steps} steps), managed allocations {allocMb:F2} MB/step; " +
                          $"{created:F0} tensors created per step x {perOp * 1e6:F1} us per tiny op (managed wrapper + dispatch, measured) = " +
                          $"~{created * perOp * 1e3:F1} ms/step ({created * perOp / wall:P1}) of managed + dispatch overhead (an estimate); the rest is native kernels");
        if (faults0 >= 0)
            Console.WriteLine($"page faults: {faults:F0} minor faults per step ({faults * 4096 / 1e6:F1} MB of fresh 4 KiB pages): buffers glibc's malloc " +
                              "handed back to the OS (mmap'd, or its heap top trimmed) and the step touched again; each costs a kernel entry and a page clear");
        return 0;
    }

    /// <summary>This process's minor page faults so far (/proc/self/stat, field 10); -1 where there is no procfs.</summary>
    static long MinorFaults()
    {
        try
        {
            var stat = File.ReadAllText("/proc/self/stat");
            // Fields after the command name, which is parenthesised and may hold spaces: state is field 3, minflt field 10.
            var rest = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(rest[7]);
        }
        catch (IOException) { return -1; }
    }

    /// <summary>Seconds per op of a 1-element add and its disposal: the fixed cost every op pays outside its kernel.</summary>
    static double TinyOpSeconds()
    {
        using var a = ones(1);
        using var b = ones(1);
        for (int i = 0; i < 1000; i++) a.add(b).Dispose();
        const int n = 20000;
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < n; i++) a.add(b).Dispose();
        return sw.Elapsed.TotalSeconds / n;
    }
}
