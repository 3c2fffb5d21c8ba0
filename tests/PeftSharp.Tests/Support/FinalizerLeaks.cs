using static TorchSharp.torch;

namespace PeftSharp.Tests;

/// <summary>
/// Counts the tensors an action leaves for the finalizer: made and dropped without Dispose. Each one is a wrapper
/// that nothing held while libtorch may still have been reading it, and TorchSharp's finalizer frees its native tensor
/// on the finalizer thread whenever a GC runs, also during that call (a standalone loop of <c>a.mm(b).mm(b).sum()</c>
/// outside a dispose scope, beside a thread calling GC.Collect, died with SIGSEGV within seconds; in a scope it ran
/// 537k iterations clean). The action runs inside a no-GC region where the runtime grants one, so no wrapper is
/// finalized before it is counted. Run it in the serial collection: Tensor.TotalCount is process-wide.
/// </summary>
public static class FinalizerLeaks
{
    public static long Count(Action act) => CountAsync(() => { act(); return Task.CompletedTask; }).GetAwaiter().GetResult();

    public static async Task<long> CountAsync(Func<Task> act)
    {
        Collect();
        bool noGc = GC.TryStartNoGCRegion(200_000_000);
        try { await act(); }
        finally
        {
            // Ended early when the action allocated more than the region: then wrappers finalized before the count are missed.
            if (noGc) try { GC.EndNoGCRegion(); } catch (InvalidOperationException) { }
        }
        long before = Tensor.TotalCount;
        Collect();
        return before - Tensor.TotalCount;
    }

    static void Collect()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }
}
