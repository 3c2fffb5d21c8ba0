using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace PeftSharp.Native;

/// <summary>
/// The allocator under libtorch's CPU tensors in a training or serving process (`peft train`, `peft serve`). libtorch 2.10 allocates them with
/// <c>c10::alloc_cpu</c> / <c>c10::free_cpu</c> in libc10.so, which call glibc's posix_memalign and free through
/// libc10's GOT (c10's own caching allocator is wired only into mobile builds, and TorchSharp does not expose
/// <c>c10::SetCPUAllocator</c>). This points those two slots of libc10 at <see cref="TensorBlockCache"/>, which reuses
/// freed buffers by size under a cap (the peak in use plus a slack the plan counts), on top of glibc's fixed 128 KiB mmap threshold
/// (ProcessMemory.ReturnLargeFreesToOs, for what passes through): resident memory still follows the tensors alive at
/// once, as the plan counts them, but a step no longer maps and zeroes its large buffers afresh (that cost `peft train` 20-30% of the step's
/// speed against glibc's default heap; bench/README.md). Nothing else in the process is redirected.
/// Where it cannot install (not Linux x64, no libc10 import found, the GOT page cannot be made writable) or with
/// <c>PEFTSHARP_TENSOR_CACHE=0</c>, the process keeps the fixed threshold alone, and <see cref="Description"/> says so.
/// The slots are put back at process exit, so libc10's frees during shutdown go straight to glibc (every cached block
/// is glibc's own).
/// </summary>
internal static unsafe partial class TensorAllocator
{
    /// <summary>Set to 0 to run without the cache: glibc's fixed mmap threshold alone (the allocator before it).</summary>
    public const string EnvironmentVariable = Memory.CpuRuntime.BufferCacheVariable;

    const string Fallback = "glibc, each buffer >= 128 KiB its own mapping, unmapped when freed";

    static readonly Lazy<(bool Cached, string Description)> Choice = new(Choose, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Installs the allocator once per process (thread safe); call before the first tensor.</summary>
    public static void Ensure() => _ = Choice.Value;

    /// <summary>True where libtorch's CPU buffers go through the cache in this process (installs nothing: false where
    /// <see cref="Ensure"/> was not called, e.g. a bench on glibc's default heap).</summary>
    public static bool Cached => Choice.IsValueCreated && Choice.Value.Cached;

    /// <summary>What allocates libtorch's CPU buffers in this process and why, for a run's header and the benches.</summary>
    public static string Description => Choice.Value.Description;

    /// <summary>
    /// Where the process's cache is installed: from now on it holds at most what the coming steps have in use at once
    /// (see <see cref="TensorBlockCache.RestartPeak"/>). The trainers call it before their first step (loading's and
    /// evaluation's peaks do not set the cap) and again after it: the first step allocates the optimiser state and the
    /// gradients, which stay, so counted from there the cache's slack follows the steps' transient tensors only, what the
    /// plan's allocator-slack term counts (counted from before it, full fine-tuning at 134M could keep ~500 MB idle where
    /// the plan counted 40). Installs nothing.
    /// </summary>
    public static void StartSteps()
    {
        if (Choice.IsValueCreated && Choice.Value.Cached) TensorBlockCache.RestartPeak();
    }

    /// <summary>Where the process's cache is installed, gives its idle blocks back (before a checkpoint's save). Installs nothing.</summary>
    public static void ReleaseIdle()
    {
        if (Choice.IsValueCreated && Choice.Value.Cached) TensorBlockCache.ReleaseIdle();
    }

    static (bool, string) Choose()
    {
        if (!Training.ProcessMemory.ReturnLargeFreesToOs()) return (false, "the C library's default (no glibc mmap threshold to set)");
        if (Environment.GetEnvironmentVariable(EnvironmentVariable) == "0") return (false, $"{Fallback} ({EnvironmentVariable}=0)");
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            return (false, $"{Fallback} (the buffer cache is Linux x64 only)");
        get_num_threads();   // loads libtorch (TorchSharp loads it on its first call) without allocating a tensor
        nint c10 = Libc.LoadedLibrary("libc10.so");
        if (c10 == 0 || !NativeLibrary.TryGetExport(c10, "_ZN3c109alloc_cpuEm", out nint allocCpu))
            return (false, $"{Fallback} (no c10::alloc_cpu in a loaded libc10.so)");
        if (!ImportSlots.TryFind(allocCpu, "posix_memalign", out var allocSlots, out string why)
            || !ImportSlots.TryFind(allocCpu, "free", out var freeSlots, out why))
            return (false, $"{Fallback} (libc10.so: {why})");
        // 0: RTLD_DEFAULT, the lookup libc10's own imports were bound by.
        nint glibcAlloc = Libc.Symbol(0, "posix_memalign"), glibcFree = Libc.Symbol(0, "free");
        if (glibcAlloc == 0 || glibcFree == 0) return (false, $"{Fallback} (dlsym found no posix_memalign/free)");
        TensorBlockCache.Use(glibcAlloc, glibcFree);
        // free first: from then on a block the cache hands out always comes back to it.
        if (!Redirect(freeSlots, TensorBlockCache.FreeEntry, out why))
        {
            Redirect(freeSlots, glibcFree, out _);
            return (false, $"{Fallback} (could not redirect libc10's free: {why})");
        }
        if (!Redirect(allocSlots, TensorBlockCache.PosixMemalignEntry, out why))
        {
            Redirect(allocSlots, glibcAlloc, out _);
            Redirect(freeSlots, glibcFree, out _);
            return (false, $"{Fallback} (could not redirect libc10's posix_memalign: {why})");
        }
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            Redirect(allocSlots, glibcAlloc, out _);
            Redirect(freeSlots, glibcFree, out _);
        };
        return (true, $"libtorch's buffers >= {TensorBlockCache.MinBytes / 1024} KiB reused by size, held under the peak in use (+ {Memory.CpuRuntime.BufferCacheSlackFraction:P0} of a trainer's steps' rise) " +
                      $"(a new size built from idle ones' pages; {EnvironmentVariable}=0: no reuse)");
    }

    static bool Redirect(List<ImportSlots.Slot> slots, nint target, out string why)
    {
        why = "";
        foreach (var slot in slots)
            if (!ImportSlots.Write(slot, target, out why)) return false;
        return true;
    }
}
