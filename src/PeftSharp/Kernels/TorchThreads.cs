using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PeftSharp.Kernels;

/// <summary>
/// A parallel loop on libtorch's own OpenMP thread team (libgomp's GOMP_parallel, what at::parallel_for calls), for
/// C# kernels that run between libtorch ops. After each parallel region libgomp's workers spin for a while (300,000
/// pause loops by default, milliseconds on this CPU) before they sleep: a .NET thread started then shares its core with
/// a spinner, and in the lora-step bench a 2-thread .NET kernel ran no faster than on one thread. On the team itself
/// the work lands on those same hot workers. Falls back to Parallel.For where libgomp's entry points are not found.
/// </summary>
internal static unsafe class TorchThreads
{
    static readonly delegate* unmanaged[Cdecl]<delegate* unmanaged[Cdecl]<void*, void>, void*, uint, uint, void> GompParallel;

    static TorchThreads()
    {
        try
        {
            // dlsym on LibTorchSharp's handle also searches its dependencies: libtorch_cpu and the libgomp it loaded.
            if (!NativeLibrary.TryLoad("LibTorchSharp", typeof(TorchSharp.torch).Assembly, null, out var lib)) return;
            if (NativeLibrary.TryGetExport(lib, "GOMP_parallel", out var parallel))
                GompParallel = (delegate* unmanaged[Cdecl]<delegate* unmanaged[Cdecl]<void*, void>, void*, uint, uint, void>)parallel;
        }
        catch (DllNotFoundException) { }
    }

    /// <summary>True where the loops run on libtorch's OpenMP team.</summary>
    public static bool OnOpenMp => GompParallel != null;

    sealed class Loop(int count, Action<int> body)
    {
        public readonly int Count = count;
        public readonly Action<int> Body = body;
        public int Next = -1;
        public Exception? Error;
    }

    /// <summary>
    /// body(0 .. count-1) on up to <paramref name="threads"/> threads; each index runs exactly once, so a body whose
    /// result depends only on its index gives the same bits whichever thread takes it.
    /// </summary>
    public static void For(int count, int threads, Action<int> body)
    {
        threads = Math.Min(threads, count);
        if (threads <= 1) { for (int i = 0; i < count; i++) body(i); return; }
        if (GompParallel == null)
        {
            Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = threads }, body);
            return;
        }
        var loop = new Loop(count, body);
        var handle = GCHandle.Alloc(loop);
        try { GompParallel(&Worker, (void*)GCHandle.ToIntPtr(handle), (uint)threads, 0); }
        finally { handle.Free(); }
        if (loop.Error is { } e) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e).Throw();
    }

    /// <summary>Runs on every thread of the team (the caller included): takes indices until none are left.</summary>
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    static void Worker(void* data)
    {
        var loop = (Loop)GCHandle.FromIntPtr((nint)data).Target!;
        try
        {
            for (int i; (i = Interlocked.Increment(ref loop.Next)) < loop.Count;) loop.Body(i);
        }
        catch (Exception e) { Interlocked.CompareExchange(ref loop.Error, e, null); }
    }
}
