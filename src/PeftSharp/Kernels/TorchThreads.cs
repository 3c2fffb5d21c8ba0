using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace PeftSharp.Kernels;

/// <summary>
/// A parallel loop on libtorch's own OpenMP thread team (<c>GOMP_parallel</c>, the entry point gcc compiles
/// <c>#pragma omp parallel</c> to and what at::parallel_for calls, of the libgomp libtorch loaded), for C# work that
/// runs between libtorch ops: the attention kernel's work items, QLoRA's dequantisation tiles. Why not .NET threads:
/// after each parallel op libgomp's workers spin for milliseconds (300,000 pause loops by default) before they sleep, so
/// a .NET thread started then shares its core with a spinner (measured: a helper thread started 0.1-2.4 ms late; a
/// 2-thread .NET attention kernel ran no faster than one thread), while the team's workers are awake and start at once.
/// Inside the region torch's ops run on the calling team thread alone (OpenMP nests no second team; MKL runs
/// sequentially). Linux builds of libtorch only (where it links libgomp); elsewhere the loop uses .NET threads.
/// </summary>
internal static unsafe partial class TorchThreads
{
    static readonly delegate* unmanaged[Cdecl]<delegate* unmanaged[Cdecl]<nint, void>, nint, uint, uint, void> GompParallel = Resolve();

    /// <summary>True where the loops run on libtorch's OpenMP team.</summary>
    public static bool OnOpenMp => GompParallel != null;

    /// <summary>Threads a team would have now: torch's intra-op threads where the team is available, else 1.</summary>
    public static int Size => OnOpenMp ? Math.Max(1, get_num_threads()) : 1;

    static delegate* unmanaged[Cdecl]<delegate* unmanaged[Cdecl]<nint, void>, nint, uint, uint, void> Resolve()
    {
        if (!OperatingSystem.IsLinux()) return null;
        // TorchSharp loads libtorch on its first call; then the loaded libtorch_cpu is looked up by its soname without
        // loading anything (RTLD_NOLOAD): loading it by path here could map a second copy of libtorch, which crashes.
        get_num_threads();
        nint torchCpu = Native.Libc.LoadedLibrary("libtorch_cpu.so");
        // dlsym on libtorch_cpu's handle also searches its dependencies, so this finds the libgomp it was linked with
        // (bundled under a hashed name) rather than whatever libgomp the system has.
        return torchCpu != 0 && NativeLibrary.TryGetExport(torchCpu, "GOMP_parallel", out var f)
            ? (delegate* unmanaged[Cdecl]<delegate* unmanaged[Cdecl]<nint, void>, nint, uint, uint, void>)f
            : null;
    }

    sealed class Loop(int count, Action<int> body, bool grad)
    {
        public readonly int Count = count;
        public readonly Action<int> Body = body;
        public readonly bool Grad = grad;
        public int Next = -1;
        public Exception? Error;
    }

    /// <summary>
    /// body(0 .. count-1) on up to <paramref name="threads"/> threads (the caller is one of them); each index runs exactly
    /// once, so a body whose result depends only on its index gives the same bits whichever thread takes it. The caller's
    /// grad mode holds on every thread; the first exception is rethrown.
    /// </summary>
    public static void For(int count, int threads, Action<int> body)
    {
        threads = Math.Min(threads, count);
        if (threads <= 1) { for (int i = 0; i < count; i++) body(i); return; }
        if (GompParallel == null)
        {
            bool grad = is_grad_enabled();
            Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = threads }, i => { using var mode = enable_grad(grad); body(i); });
            return;
        }
        var loop = new Loop(count, body, is_grad_enabled());
        var handle = GCHandle.Alloc(loop);
        try { GompParallel(&Worker, GCHandle.ToIntPtr(handle), (uint)threads, 0); }
        finally { handle.Free(); }
        if (loop.Error is { } e) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e).Throw();
    }

    /// <summary>Runs on every thread of the team (the caller included): takes indices until none are left.</summary>
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    static void Worker(nint data)
    {
        var loop = (Loop)GCHandle.FromIntPtr(data).Target!;
        try
        {
            // Grad mode is per thread in libtorch: the workers' default (on) would record what the body runs.
            using var mode = enable_grad(loop.Grad);
            for (int i; (i = Interlocked.Increment(ref loop.Next)) < loop.Count;) loop.Body(i);
        }
        catch (Exception e) { Interlocked.CompareExchange(ref loop.Error, e, null); }
    }
}
