using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// Runs managed code on torch's own OpenMP team: <c>GOMP_parallel</c> (the entry point gcc compiles
/// <c>#pragma omp parallel</c> to) of the libgomp that libtorch loaded, with a managed callback each team thread runs.
/// Why not .NET threads: after each parallel op torch's OpenMP workers spin for a few milliseconds on the other cores,
/// so a .NET thread started there waits for the core (measured: a helper thread started 0.1-2.4 ms late and the pair ran
/// no faster than one thread), while the team's workers are already awake and start at once. Inside the region torch's
/// ops run on the calling team thread alone (OpenMP nests no second team; MKL runs sequentially).
/// Linux builds of libtorch only (where it links libgomp); elsewhere, or with one torch thread, the body runs inline.
/// </summary>
internal static unsafe partial class OpenMpTeam
{
    static readonly delegate* unmanaged<delegate* unmanaged<nint, void>, nint, uint, uint, void> Parallel = Resolve();

    /// <summary>Whether the team can run managed code here (libtorch's libgomp found).</summary>
    public static bool Available => Parallel != null;

    /// <summary>Threads a team would have now: torch's intra-op threads where the team is available, else 1.</summary>
    public static int Size => Available ? Math.Max(1, get_num_threads()) : 1;

    static delegate* unmanaged<delegate* unmanaged<nint, void>, nint, uint, uint, void> Resolve()
    {
        if (!OperatingSystem.IsLinux()) return null;
        // TorchSharp loads libtorch on its first call; then the loaded libtorch_cpu is looked up by its soname without
        // loading anything (RTLD_NOLOAD): loading it by path here could map a second copy of libtorch, which crashes.
        get_num_threads();
        nint torchCpu;
        try { torchCpu = dlopen("libtorch_cpu.so", RtldLazy | RtldNoLoad); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
        // dlsym on libtorch_cpu's handle also searches its dependencies, so this finds the libgomp it was linked with
        // (bundled under a hashed name) rather than whatever libgomp the system has.
        return torchCpu != 0 && NativeLibrary.TryGetExport(torchCpu, "GOMP_parallel", out var f)
            ? (delegate* unmanaged<delegate* unmanaged<nint, void>, nint, uint, uint, void>)f
            : null;
    }

    const int RtldLazy = 1, RtldNoLoad = 4;

    [LibraryImport("libc", EntryPoint = "dlopen", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint dlopen(string file, int mode);

    sealed class Work(Action<int> body, int threads, bool grad)
    {
        public readonly Action<int> Body = body;
        public readonly int Threads = threads;
        public readonly bool Grad = grad;
        public int NextSlot;
        public Exception? Error;
    }

    /// <summary>
    /// Runs <paramref name="body"/>(slot) once for each slot 0..threads-1, each on its own team thread (the calling
    /// thread is one of them), and returns when all have. Which thread gets which slot varies; what a slot does must
    /// depend on the slot only. The calling thread's grad mode holds on every thread; the first exception is rethrown.
    /// </summary>
    public static void Run(int threads, Action<int> body)
    {
        if (threads <= 1 || Parallel == null)
        {
            for (int slot = 0; slot < Math.Max(1, threads); slot++) body(slot);
            return;
        }
        var work = new Work(body, threads, is_grad_enabled());
        var handle = GCHandle.Alloc(work);
        try { Parallel(&Member, GCHandle.ToIntPtr(handle), (uint)threads, 0); }
        finally { handle.Free(); }
        if (work.Error is { } e) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e).Throw();
    }

    /// <summary>What each team thread runs: claims slots until none are left (OpenMP may give the team fewer threads).</summary>
    [UnmanagedCallersOnly]
    static void Member(nint data)
    {
        var work = (Work)GCHandle.FromIntPtr(data).Target!;
        try
        {
            // Grad mode is per thread in libtorch: the workers' default (on) would record the tile matmuls.
            using var mode = enable_grad(work.Grad);
            for (int slot; (slot = Interlocked.Increment(ref work.NextSlot) - 1) < work.Threads;) work.Body(slot);
        }
        catch (Exception e) { Interlocked.CompareExchange(ref work.Error, e, null); }
    }
}
