using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PeftSharp.Native;

/// <summary>
/// The block cache under libtorch's CPU tensors (see <see cref="TensorAllocator"/> for how it is installed). Buffers of
/// at least <see cref="MinBytes"/> that libtorch frees are kept, by size rounded up to whole pages, and handed back to
/// the next request of that size, so a training step reuses the previous step's buffers instead of mapping and
/// faulting fresh ones (glibc serves them with their own mappings: ProcessMemory.ReturnLargeFreesToOs). The memory it
/// holds (buffers in use + idle ones) never exceeds its cap: the highest number of bytes in use at once so far, plus
/// 15% (Memory.CpuRuntime.BufferCacheSlackFraction) of that peak above what was in use when the trainer's steps began.
/// A request that finds no idle block of its size first releases the longest-idle blocks until the new one fits under
/// the cap. So the resident set peaks where the tensors alive at once peak, plus at most that slack, which the memory
/// planner counts (its CPU "allocator slack"). Without the slack a step that needs more of one size than it held at its
/// peak must map and fault a fresh block each time (lora-step: 351 misses in 7 steps, 0.92x glibc's heap; with it 164,
/// 0.99x). Blocks come from glibc's own posix_memalign and go back through glibc's free, so a block the cache does not
/// know (made before it was installed, or after its tables filled) simply passes through to glibc.
/// Thread safe (OpenMP workers allocate too): one lock around the tables, glibc's calls made outside it.
/// </summary>
internal static unsafe class TensorBlockCache
{
    /// <summary>Smaller requests go straight to glibc, whose heap serves them without new mappings.</summary>
    public const long MinBytes = 128 * 1024;
    const long Page = 4096;
    /// <summary>Blocks tracked at once (in use + idle); beyond it requests pass through to glibc.</summary>
    const int Capacity = 1 << 14;

    static readonly Lock Gate = new();
    // Block table: a block's address and rounded size; idle blocks are in two doubly linked lists, one per size (most
    // recently freed first: its pages are the warmest) and one over all sizes by age (the eviction order).
    static readonly nint[] Address = new nint[Capacity];
    static readonly long[] Bytes = new long[Capacity];
    static readonly int[] SizeNext = new int[Capacity], SizePrev = new int[Capacity], AgeNext = new int[Capacity], AgePrev = new int[Capacity];
    static readonly Dictionary<nint, int> InUse = new(Capacity);
    static readonly Dictionary<long, int> IdleBySize = new(Capacity);
    static int freeSlots = -1, unusedSlots, newestIdle = -1, oldestIdle = -1;
    static long inUseBytes, idleBytes, peakInUseBytes, stepsBaseBytes = long.MaxValue;   // no slack before a trainer's steps
    static long hits, misses, released, passedThrough, reusedBytes;

    static delegate* unmanaged[Cdecl]<void**, nuint, nuint, int> glibcPosixMemalign;
    static delegate* unmanaged[Cdecl]<void*, void> glibcFree;
    static delegate* unmanaged[Cdecl]<nint, nuint, nint> glibcRealloc;

    /// <summary>Counters since install, for tests and the bench's output.</summary>
    public readonly record struct Counters(long Hits, long Misses, long Released, long PassedThrough, long ReusedBytes, long InUseBytes, long IdleBytes, long PeakInUseBytes);

    public static Counters Read()
    {
        lock (Gate) return new(hits, misses, released, passedThrough, Interlocked.Read(ref reusedBytes), inUseBytes, idleBytes, peakInUseBytes);
    }

    /// <summary>One line for a run's end: how many requests the cache served from freed buffers, and what it held.</summary>
    public static string Summary()
    {
        var c = Read();
        return $"reused {c.Hits} of {c.Hits + c.Misses} buffers >= {MinBytes / 1024} KiB ({c.ReusedBytes / 1048576.0:F0} MB more kept their pages through realloc); " +
               $"the most in use at once {c.PeakInUseBytes / 1048576.0:F1} MB, idle ones held up to {Memory.CpuRuntime.BufferCacheSlackFraction:P0} of the steps' rise above it";
    }

    /// <summary>The functions the cache gets its blocks from, resizes and returns them to (glibc's, as libc10 would call them).</summary>
    public static void Use(nint posixMemalign, nint realloc, nint free)
    {
        glibcRealloc = (delegate* unmanaged[Cdecl]<nint, nuint, nint>)realloc;
        glibcPosixMemalign = (delegate* unmanaged[Cdecl]<void**, nuint, nuint, int>)posixMemalign;
        glibcFree = (delegate* unmanaged[Cdecl]<void*, void>)free;
    }

    public static nint PosixMemalignEntry => (nint)(delegate* unmanaged[Cdecl]<void**, nuint, nuint, int>)&PosixMemalign;
    public static nint FreeEntry => (nint)(delegate* unmanaged[Cdecl]<void*, void>)&Free;

    /// <summary>
    /// Gives every idle block back and counts the peak in use from now on: a transient peak before (loading a model,
    /// quantising it, evaluating) would otherwise let the cache keep that much through training, above its steps' own peak.
    /// </summary>
    public static void RestartPeak()
    {
        lock (Gate) peakInUseBytes = stepsBaseBytes = inUseBytes;
        ReleaseIdle();
    }

    /// <summary>Gives every idle block back to glibc (and so to the OS).</summary>
    public static void ReleaseIdle()
    {
        while (true)
        {
            nint p;
            lock (Gate) p = TakeOldestIdle();
            if (p == 0) return;
            glibcFree((void*)p);
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    static int PosixMemalign(void** result, nuint alignment, nuint size)
    {
        if ((long)size < MinBytes) return glibcPosixMemalign(result, alignment, size);
        long bytes = ((long)size + Page - 1) & ~(Page - 1);
        lock (Gate)
        {
            if (IdleBySize.TryGetValue(bytes, out int slot) && (Address[slot] & (nint)(alignment - 1)) == 0)
            {
                UnlinkIdle(slot);
                TrackInUse(slot);
                hits++;
                *result = (void*)Address[slot];
                return 0;
            }
            misses++;
        }
        // Make room under the cap: the new block plus everything held may not pass the most ever in use at once, plus,
        // once a trainer's steps began, the slack the planner counts (Memory.CpuRuntime.BufferCacheSlackFraction of the
        // peak's rise above what was live at their start; loading and `peft serve --return-frees` keep the strict cap).
        // The largest block released for it becomes the new block (Repurpose: its pages are kept, not faulted in and
        // zeroed afresh); the others go back to glibc.
        const int Batch = 16;
        nint* victims = stackalloc nint[Batch];
        long* victimBytes = stackalloc long[Batch];
        int n = 0;
        bool more = true;
        while (more)
        {
            lock (Gate)
            {
                long limit = Math.Max(peakInUseBytes, inUseBytes + bytes);
                limit += (long)(Math.Max(0, peakInUseBytes - stepsBaseBytes) * Memory.CpuRuntime.BufferCacheSlackFraction);
                more = false;
                for (n = 0; n < Batch && inUseBytes + idleBytes + bytes > limit && oldestIdle >= 0; n++)
                {
                    victimBytes[n] = Bytes[oldestIdle];
                    victims[n] = TakeOldestIdle();
                }
                more = n == Batch && inUseBytes + idleBytes + bytes > limit && oldestIdle >= 0;
            }
            if (more) ReleaseAll(victims, n);   // a request larger than 16 released blocks: the rest just go
        }
        int rc = 0;
        if (n > 0 && Repurpose(victims, victimBytes, n, alignment, bytes) is var reused && reused != 0) *result = (void*)reused;
        else rc = glibcPosixMemalign(result, alignment, (nuint)bytes);
        ReleaseAll(victims, n);
        if (rc != 0) return rc;
        lock (Gate)
        {
            int slot = NewSlot();
            if (slot < 0) { passedThrough++; return 0; }   // tables full: glibc's block, glibc frees it
            Address[slot] = (nint)(*result);
            Bytes[slot] = bytes;
            TrackInUse(slot);
        }
        return 0;
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    static void Free(void* p)
    {
        if (p == null) return;
        lock (Gate)
        {
            if (InUse.Remove((nint)p, out int slot))
            {
                inUseBytes -= Bytes[slot];
                LinkIdle(slot);
                return;
            }
        }
        glibcFree(p);   // not a cached block: libc10's own malloc'd memory, or a buffer made before the install
    }

    static void ReleaseAll(nint* blocks, int count)
    {
        for (int i = 0; i < count; i++) if (blocks[i] != 0) glibcFree((void*)blocks[i]);
    }

    /// <summary>
    /// Turns the largest of the released blocks into the new one with glibc's realloc, which resizes the block's own
    /// mapping (mremap) and so keeps its pages: they are not faulted in and zeroed afresh, and the resident set is what
    /// it would be after the release (stale bytes are fine, as in any malloc). glibc keeps the block's offset in its
    /// page, so its alignment; where another malloc did not, the block is freed and a new one allocated. The donor is
    /// taken out of <paramref name="blocks"/> (0), the rest are for the caller to release. 0 if none could serve.
    /// </summary>
    static nint Repurpose(nint* blocks, long* blockBytes, int count, nuint alignment, long bytes)
    {
        int donor = 0;
        for (int i = 1; i < count; i++) if (blockBytes[i] > blockBytes[donor]) donor = i;
        nint block = glibcRealloc(blocks[donor], (nuint)bytes);
        if (block == 0) return 0;   // realloc failed: the donor is still there, released with the rest
        blocks[donor] = 0;
        if ((block & (nint)(alignment - 1)) == 0) { Interlocked.Add(ref reusedBytes, Math.Min(bytes, blockBytes[donor])); return block; }
        glibcFree((void*)block);
        return 0;
    }

    static void TrackInUse(int slot)
    {
        InUse[Address[slot]] = slot;
        inUseBytes += Bytes[slot];
        if (inUseBytes > peakInUseBytes) peakInUseBytes = inUseBytes;
    }

    static int NewSlot()
    {
        if (freeSlots >= 0) { int s = freeSlots; freeSlots = SizeNext[s]; return s; }
        return unusedSlots < Capacity ? unusedSlots++ : -1;
    }

    static void LinkIdle(int slot)
    {
        long bytes = Bytes[slot];
        int head = IdleBySize.GetValueOrDefault(bytes, -1);
        SizePrev[slot] = -1;
        SizeNext[slot] = head;
        if (head >= 0) SizePrev[head] = slot;
        IdleBySize[bytes] = slot;
        AgePrev[slot] = -1;
        AgeNext[slot] = newestIdle;
        if (newestIdle >= 0) AgePrev[newestIdle] = slot;
        newestIdle = slot;
        if (oldestIdle < 0) oldestIdle = slot;
        idleBytes += bytes;
    }

    static void UnlinkIdle(int slot)
    {
        int next = SizeNext[slot], prev = SizePrev[slot];
        if (prev >= 0) SizeNext[prev] = next;
        else if (next >= 0) IdleBySize[Bytes[slot]] = next;
        else IdleBySize.Remove(Bytes[slot]);   // no idle block of this size left: the table holds only sizes on hand
        if (next >= 0) SizePrev[next] = prev;
        next = AgeNext[slot];
        prev = AgePrev[slot];
        if (prev >= 0) AgeNext[prev] = next; else newestIdle = next;
        if (next >= 0) AgePrev[next] = prev; else oldestIdle = prev;
        idleBytes -= Bytes[slot];
    }

    /// <summary>Removes the longest-idle block from the tables (the caller holds the lock) and returns its address, 0 if none.</summary>
    static nint TakeOldestIdle()
    {
        int slot = oldestIdle;
        if (slot < 0) return 0;
        UnlinkIdle(slot);
        SizeNext[slot] = freeSlots;
        freeSlots = slot;
        released++;
        return Address[slot];
    }
}
