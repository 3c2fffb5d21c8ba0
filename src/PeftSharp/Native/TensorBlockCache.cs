using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PeftSharp.Native;

/// <summary>
/// The block cache under libtorch's CPU tensors (see <see cref="TensorAllocator"/> for how it is installed). Each
/// buffer of at least <see cref="MinBytes"/> is a mapping of its own, laid out as glibc lays out the mmapped chunks of
/// its posix_memalign (so glibc's free can unmap one after the cache is uninstalled at exit). Freed buffers are kept
/// idle, by mapping size, and handed back to the next request of that size. The memory held (buffers in use + idle
/// ones) never exceeds the cap: the most bytes in use at once so far, plus 30% (Memory.CpuRuntime.BufferCacheSlackFraction)
/// of that peak above what was in use after the trainer's first step (state and gradients allocated); the memory planner counts that slack (its CPU
/// "allocator slack"), so the resident set peaks where the live tensors peak, plus the slack.
/// A request of a size no idle buffer has is built from the pages of the longest-idle buffers when the cap leaves no
/// room for fresh ones: their pages are moved into the new mapping (mremap: page tables move, nothing is copied,
/// faulted in or zeroed again), the last donor split if it is larger than needed. So once the cache holds its cap,
/// a training step touches no fresh page: before, the cache gave such donors back to glibc and the new buffer was
/// faulted in afresh (lora-step: 6,200 minor faults = 25 MB per step, ~20 ms of kernel time over the two threads).
/// Requests it does not serve (smaller, or aligned beyond <see cref="Offset"/>) and frees of pointers it does not
/// know (libc10's own mallocs, buffers from before the install) pass through to glibc.
/// Thread safe (OpenMP workers allocate too): one lock around the tables, the system calls made outside it.
/// </summary>
internal static unsafe class TensorBlockCache
{
    /// <summary>Smaller requests go straight to glibc, whose heap serves them without new mappings.</summary>
    public const long MinBytes = 128 * 1024;
    const long Page = 4096;
    /// <summary>
    /// Where a buffer starts in its mapping, and so the alignment the cache serves (libc10 asks 64): glibc's
    /// mmapped-chunk header sits in the 16 bytes before it, prev_size = 48 (the chunk's offset in the mapping) and
    /// size = mapping - 48 with IS_MMAPPED, which is what glibc's free checks and unmaps by.
    /// </summary>
    const long Offset = 64;
    /// <summary>Blocks tracked at once (in use + idle); beyond it requests pass through to glibc.</summary>
    const int Capacity = 1 << 12;
    /// <summary>
    /// Mappings one block spans at most. A block built from donors' pages spans one kernel mapping (VMA) per piece
    /// moved in (moved anonymous pages keep their page offsets, so neighbouring pieces do not merge), and each split of
    /// a donor inside a piece makes one more: without a bound the process's mappings grow by ~8 per lora-step step
    /// toward the kernel's limit (vm.max_map_count, 65530). Pieces are tracked per block, so each moves as one mapping.
    /// </summary>
    const int MaxPieces = 64;
    /// <summary>Pieces of all blocks together, an eighth of vm.max_map_count's default: beyond it a donor gives whole pieces
    /// only, and the part of its last one the new block does not need is unmapped (fresh pages later) instead of split off.</summary>
    const int PieceBudget = 8192;

    /// <summary>Debug switch: 1 fills every buffer libc10 gets (cached, built, fresh or glibc's) with 0xFF bytes (NaN in
    /// fp32 and bf16) before handing it out, so an op that reads memory it did not write shows at once.</summary>
    public const string PoisonVariable = "PEFTSHARP_TENSOR_CACHE_POISON";
    static readonly bool Poison = Environment.GetEnvironmentVariable(PoisonVariable) == "1";

    static readonly Lock Gate = new();
    // Block table: a block's mapping address and size; idle blocks are in two doubly linked lists, one per size (most
    // recently freed first: its pages are the warmest) and one over all sizes by age (the order donors are taken in).
    static readonly nint[] Address = new nint[Capacity];
    static readonly long[] Bytes = new long[Capacity];
    // Each block's pieces (mappings) in address order, in pages: PiecePages[slot * MaxPieces + i], PieceCount[slot] of them.
    static readonly int[] PiecePages = new int[Capacity * MaxPieces], PieceCount = new int[Capacity];
    static readonly int[] SizeNext = new int[Capacity], SizePrev = new int[Capacity], AgeNext = new int[Capacity], AgePrev = new int[Capacity];
    static readonly Dictionary<nint, int> InUse = new(Capacity);
    static readonly Dictionary<long, int> IdleBySize = new(Capacity);
    static int totalPieces, freeSlots = -1, unusedSlots, newestIdle = -1, oldestIdle = -1;
    static long inUseBytes, idleBytes, peakInUseBytes, stepsBaseBytes = long.MaxValue;   // no slack before a trainer's steps
    static long hits, misses, released, passedThrough, movedBytes, freshBytes, moveFailures;

    static delegate* unmanaged[Cdecl]<void**, nuint, nuint, int> glibcPosixMemalign;
    static delegate* unmanaged[Cdecl]<void*, void> glibcFree;

    /// <summary>Counters since install, for tests and the bench's output: requests served from an idle buffer (hits) or
    /// not (misses), idle buffers unmapped, requests passed through for a full table, bytes of new buffers built from
    /// idle buffers' pages (moved) and mapped fresh, page moves the kernel refused (their pages were unmapped).</summary>
    public readonly record struct Counters(long Hits, long Misses, long Released, long PassedThrough, long MovedBytes, long FreshBytes, long MoveFailures,
                                           long InUseBytes, long IdleBytes, long PeakInUseBytes);

    public static Counters Read()
    {
        lock (Gate) return new(hits, misses, released, passedThrough, movedBytes, freshBytes, moveFailures, inUseBytes, idleBytes, peakInUseBytes);
    }

    /// <summary>One line for a run's end: how many requests the cache served from freed buffers, and what it held.</summary>
    public static string Summary()
    {
        var c = Read();
        bool steps;
        lock (Gate) steps = stepsBaseBytes != long.MaxValue;
        return $"reused {c.Hits} of {c.Hits + c.Misses} buffers >= {MinBytes / 1024} KiB ({c.MovedBytes / 1048576.0:F0} MB more built from idle buffers' pages, " +
               $"{c.FreshBytes / 1048576.0:F0} MB mapped fresh); the most in use at once {c.PeakInUseBytes / 1048576.0:F1} MB, " +
               (steps ? $"idle ones held up to {Memory.CpuRuntime.BufferCacheSlackFraction:P0} of the steps' rise above it" : "idle ones held within it (no trainer's steps: no slack)");
    }

    /// <summary>The functions requests the cache does not serve go to (glibc's, as libc10 would call them).</summary>
    public static void Use(nint posixMemalign, nint free)
    {
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

    /// <summary>Gives every idle block back to the OS.</summary>
    public static void ReleaseIdle() => ReleaseOldest(long.MaxValue);

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    static int PosixMemalign(void** result, nuint alignment, nuint size)
    {
        int rc = (long)size < MinBytes || alignment > Offset ? glibcPosixMemalign(result, alignment, size) : Allocate(result, (long)size);
        if (Poison && rc == 0) NativeMemory.Fill(*result, size, 0xFF);
        return rc;
    }

    static int Allocate(void** result, long size)
    {
        long bytes = (size + Offset + Page - 1) & ~(Page - 1);
        // The donors: where the new block and everything held would pass the cap (the most ever in use at once, plus,
        // once a trainer's steps began, the slack the planner counts: Memory.CpuRuntime.BufferCacheSlackFraction of the
        // peak's rise above what was live at their start; loading keeps the strict cap),
        // the longest-idle blocks give the new one their pages, piece by piece from their ends, the last of them only
        // as many as the new block lacks (its head stays idle, shorter). One piece is kept for the fresh pages.
        nint* from = stackalloc nint[MaxPieces];
        int* pages = stackalloc int[MaxPieces];
        int pieces = 0;
        long lacking;
        lock (Gate)
        {
            if (IdleBySize.TryGetValue(bytes, out int slot))
            {
                UnlinkIdle(slot);
                TrackInUse(slot);
                hits++;
                *result = (void*)(Address[slot] + Offset);
                return 0;
            }
            misses++;
            long limit = Math.Max(peakInUseBytes, inUseBytes + bytes);
            limit += (long)(Math.Max(0, peakInUseBytes - stepsBaseBytes) * Memory.CpuRuntime.BufferCacheSlackFraction);
            lacking = Math.Min(bytes, (inUseBytes + idleBytes + bytes - limit + Page - 1) & ~(Page - 1));
            while (lacking > 0 && oldestIdle >= 0 && pieces < MaxPieces - 1)
                lacking -= TakePages(oldestIdle, lacking / Page, MaxPieces - 1 - pieces, totalPieces < PieceBudget, from, pages, ref pieces) * Page;
        }
        ReleaseOldest(lacking);   // the donors' pieces ran out: the rest of what the cap lacks is unmapped
        nint block = Libc.MapAnonymous((nint)bytes);
        if (block == 0)
        {
            for (int i = 0; i < pieces; i++) Libc.Unmap(from[i], (nint)(pages[i] * Page));
            return 12;   // ENOMEM
        }
        // The donors' pieces first (the header's page among them), the fresh pages after them; the end of a last piece
        // the block does not need (no split: the piece budget is spent) is unmapped.
        long at = 0, failed = 0, lost = 0;
        int kept = 0;
        for (int i = 0; i < pieces; i++)
        {
            long move = Math.Min(pages[i] * Page, bytes - at);
            if (move > 0 && !Libc.MovePages(from[i], (nint)move, block + (nint)at))
            {
                Libc.Unmap(from[i], (nint)move);   // not expected (a piece is one mapping): fresh pages there
                failed++;
                lost += move;
            }
            if (move < pages[i] * Page) Libc.Unmap(from[i] + (nint)move, (nint)(pages[i] * Page - move));
            if (move > 0) pages[kept++] = (int)(move / Page);
            at += move;
        }
        pieces = kept;
        if (at < bytes) pages[pieces++] = (int)((bytes - at) / Page);
        WriteChunkHeader(block, bytes);
        lock (Gate)
        {
            movedBytes += at - lost;
            freshBytes += bytes - at + lost;
            moveFailures += failed;
            int slot = NewSlot();
            if (slot < 0) { passedThrough++; *result = (void*)(block + Offset); return 0; }   // tables full: glibc's free unmaps it
            Address[slot] = block;
            Bytes[slot] = bytes;
            PieceCount[slot] = pieces;
            totalPieces += pieces;
            for (int i = 0; i < pieces; i++) PiecePages[slot * MaxPieces + i] = pages[i];
            TrackInUse(slot);
        }
        *result = (void*)(block + Offset);
        return 0;
    }

    /// <summary>
    /// Takes up to <paramref name="wanted"/> pages in at most <paramref name="budget"/> pieces from the end of idle block
    /// <paramref name="donor"/> (the caller holds the lock), appending them to from/pages in address order: whole pieces
    /// from the last one back, then the tail of the piece before them if still short (the kernel splits that mapping).
    /// The donor leaves the tables if nothing is left of it, else stays idle, shorter, oldest (the next donor). Returns
    /// the pages taken. Without <paramref name="split"/>, a last piece larger than what is still wanted is taken whole
    /// (more than <paramref name="wanted"/>: the caller unmaps what its block does not need).
    /// </summary>
    static long TakePages(int donor, long wanted, int budget, bool split, nint* from, int* pages, ref int pieces)
    {
        int count = PieceCount[donor], first = count;
        var own = PiecePages.AsSpan(donor * MaxPieces, MaxPieces);
        long taken = 0;
        while (first > 0 && count - first < budget && taken + own[first - 1] <= wanted) taken += own[--first];
        if (!split && first > 0 && count - first < budget && taken < wanted) taken += own[--first];
        int partial = split && first > 0 && count - first < budget && taken < wanted ? (int)(wanted - taken) : 0;
        long end = Bytes[donor];
        nint start = Address[donor] + (nint)(end - taken * Page - partial * Page);
        if (partial > 0) { from[pieces] = start; pages[pieces++] = partial; start += (nint)(partial * Page); }
        for (int i = first; i < count; i++) { from[pieces] = start; pages[pieces++] = own[i]; start += (nint)(own[i] * Page); }
        UnlinkIdle(donor);
        totalPieces -= count - first;   // the pieces it gave whole; a split one stays its (and the new block's: one more)
        if (first == 0)
        {
            SizeNext[donor] = freeSlots;   // nothing left of it: its slot is free
            freeSlots = donor;
            return taken;
        }
        if (partial > 0) own[first - 1] -= partial;
        PieceCount[donor] = first;
        Bytes[donor] = end - (taken + partial) * Page;
        WriteChunkHeader(Address[donor], Bytes[donor]);
        LinkIdle(donor, oldest: true);
        return taken + partial;
    }

    /// <summary>Unmaps the longest-idle blocks until <paramref name="bytes"/> are released or none is left.</summary>
    static void ReleaseOldest(long bytes)
    {
        while (bytes > 0)
        {
            nint p;
            long size;
            lock (Gate) (p, size) = TakeOldestIdle();
            if (p == 0) return;
            Libc.Unmap(p, (nint)size);
            lock (Gate) released++;
            bytes -= size;
        }
    }

    /// <summary>glibc's header of an mmapped chunk whose memory starts <see cref="Offset"/> into a mapping of <paramref name="bytes"/>:
    /// prev_size (the chunk's offset in the mapping) and size | IS_MMAPPED, in the 16 bytes before the memory.</summary>
    static void WriteChunkHeader(nint mapping, long bytes)
    {
        const long ChunkOffset = Offset - 16, IsMmapped = 2;
        ((long*)(mapping + (nint)ChunkOffset))[0] = ChunkOffset;
        ((long*)(mapping + (nint)ChunkOffset))[1] = (bytes - ChunkOffset) | IsMmapped;
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    static void Free(void* p)
    {
        if (p == null) return;
        lock (Gate)
        {
            if (InUse.Remove((nint)p - (nint)Offset, out int slot))
            {
                inUseBytes -= Bytes[slot];
                LinkIdle(slot, oldest: false);
                return;
            }
        }
        glibcFree(p);   // not a cached block: libc10's own malloc'd memory, a small buffer, or one made before the install
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

    /// <summary>Puts a block in the idle lists: first in its size's list, and newest by age (just freed) or oldest (a donor's
    /// remainder, to give its pages next).</summary>
    static void LinkIdle(int slot, bool oldest)
    {
        long bytes = Bytes[slot];
        int head = IdleBySize.GetValueOrDefault(bytes, -1);
        SizePrev[slot] = -1;
        SizeNext[slot] = head;
        if (head >= 0) SizePrev[head] = slot;
        IdleBySize[bytes] = slot;
        if (oldest)
        {
            AgeNext[slot] = -1;
            AgePrev[slot] = oldestIdle;
            if (oldestIdle >= 0) AgeNext[oldestIdle] = slot;
            oldestIdle = slot;
            if (newestIdle < 0) newestIdle = slot;
        }
        else
        {
            AgePrev[slot] = -1;
            AgeNext[slot] = newestIdle;
            if (newestIdle >= 0) AgePrev[newestIdle] = slot;
            newestIdle = slot;
            if (oldestIdle < 0) oldestIdle = slot;
        }
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

    /// <summary>Removes the longest-idle block from the tables (the caller holds the lock): its mapping and size, (0, 0) if none.</summary>
    static (nint Mapping, long Bytes) TakeOldestIdle()
    {
        int slot = oldestIdle;
        if (slot < 0) return (0, 0);
        UnlinkIdle(slot);
        SizeNext[slot] = freeSlots;
        freeSlots = slot;
        totalPieces -= PieceCount[slot];
        return (Address[slot], Bytes[slot]);
    }
}
