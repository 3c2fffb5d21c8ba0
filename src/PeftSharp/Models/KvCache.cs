using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Per-layer keys and values of the tokens seen so far, [B, kvHeads, stored, headDim]. Each layer's slots live at the
/// front of a buffer with spare capacity, and a step's keys are copied into the next free slots in place: growing by
/// concatenation copied the whole cache every token (O(length) per step, and under load one more parallel region
/// per layer). Where the user knows how many slots the cache will hold (<see cref="ExpectedSlots"/>: the server, from
/// each row's prompt + max_tokens) a buffer never has slots no token can fill (the
/// memory plan counts prompt + max_tokens per row, and a buffer the allocator reuses or rebuilds from other buffers'
/// pages is resident in full, untouched slots included). A buffer grows by half its size when full, so copies are
/// amortised O(1) per token, but never past those expected slots: a row with a long max_tokens that stops early does
/// not hold its whole context at once. Rows joining (<see cref="AppendRows"/>) or leaving (<see cref="SelectRows"/>) a
/// batch rebuild every layer once, and with expected slots the rebuilt buffers hold them all, so the steps after write
/// in place.
/// A sliding-window layer keeps only the newest window - 1 slots (all a later query can see), so its memory stays
/// bounded; each layer remembers the absolute slot its stored keys start at, so masks over all slots still apply.
/// </summary>
internal sealed class KvCache : IDisposable
{
    readonly Tensor?[] _k, _v;
    readonly long[] _start;
    readonly long[] _len;   // slots in use at the front of each layer's buffer
    readonly int?[] _window;   // a sliding layer's window, as its appends gave it (a join sizes the layer by it)

    /// <summary>
    /// The most slots (absolute, as <see cref="Length"/> counts them) the cache will hold before its rows change, where
    /// the caller knows it: a buffer that must grow then grows by half at most up to it (a sliding-window layer up to its
    /// window). Null (the default): unknown. A step that needs more than it says grows by half as without it.
    /// </summary>
    internal long? ExpectedSlots { get; set; }

    public KvCache(int layers)
    {
        _k = new Tensor?[layers];
        _v = new Tensor?[layers];
        _start = new long[layers];
        _len = new long[layers];
        _window = new int?[layers];
    }

    /// <summary>Tokens already cached (the position of the next token), counting slots a window has dropped.</summary>
    public long Length => _k[0] is null ? 0 : _start[0] + _len[0];

    /// <summary>Slots a layer's buffers have room for (stored + spare), for tests of the sizing.</summary>
    internal long Capacity(int layer) => _k[layer]?.shape[2] ?? 0;

    /// <summary>Slots a layer actually holds (at most window - 1 between steps for a sliding layer).</summary>
    public long StoredSlots(int layer) => _len[layer];

    /// <summary>A layer's stored keys and values (views of the buffers' used slots; the C# decode copies them in once).</summary>
    internal (Tensor K, Tensor V) Stored(int layer) => (_k[layer]!.narrow(2, 0, _len[layer]), _v[layer]!.narrow(2, 0, _len[layer]));

    /// <summary>Replaces a layer's buffers with exactly-filled ones (the caller's results; they leave its dispose scope).</summary>
    void Set(int layer, Tensor k, Tensor v)
    {
        k.DetachFromDisposeScope(); v.DetachFromDisposeScope();
        _k[layer]?.Dispose(); _v[layer]?.Dispose();
        _k[layer] = k; _v[layer] = v;
        _len[layer] = k.shape[2];
    }

    /// <summary>Makes room for <paramref name="needed"/> slots, keeping the used ones: new buffers half again as large or
    /// more, but no larger than the slots this layer can still use (<see cref="ExpectedSlots"/> from its start, at most
    /// <paramref name="most"/>) where that is known and enough.</summary>
    void Reserve(int layer, Tensor like, long needed, long most)
    {
        if (_k[layer] is { } k && k.shape[2] >= needed && k.shape[0] == like.shape[0]) return;
        long cap = Math.Max(needed + 16, (_k[layer]?.shape[2] ?? 0) * 3 / 2);
        if (ExpectedSlots is { } e && Math.Min(e - _start[layer], most) is var expected && expected >= needed) cap = Math.Min(cap, expected);
        var (nk, nv) = NewBuffers(like, like.shape[0], cap);
        if (_k[layer] is not null && _len[layer] > 0)
        {
            var (ok, ov) = Stored(layer);
            using (ok) using (ov)
            using (var dk = nk.narrow(2, 0, _len[layer])) using (var dv = nv.narrow(2, 0, _len[layer]))
            { dk.copy_(ok); dv.copy_(ov); }
        }
        _k[layer]?.Dispose(); _v[layer]?.Dispose();
        _k[layer] = nk; _v[layer] = nv;
    }

    /// <summary>Appends this step's keys/values and returns the full ones (owned by the cache).</summary>
    public (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v) { var (K, V, _) = Append(layer, k, v, null); return (K, V); }

    /// <summary>
    /// Appends this step's keys/values; returns the keys/values this step attends over and the absolute slot of
    /// their first row (callers narrow a mask over all slots from there). With a <paramref name="window"/>, the
    /// stored slots are then cut to the newest window - 1.
    /// </summary>
    public (Tensor K, Tensor V, long Start) Append(int layer, Tensor k, Tensor v, int? window)
    {
        long len = _len[layer], t = k.shape[2];
        _window[layer] = window;
        long keep = window is { } w ? Math.Max(0, w - 1) : long.MaxValue;
        // The cache owns its buffers across steps (outside any dispose scope); nothing flows back through them.
        using (no_grad())
        {
            // A windowed layer holds at most window - 1 slots between steps, and this step's on top while it attends.
            Reserve(layer, k, len + t, keep == long.MaxValue ? long.MaxValue : keep + t);
            using var dk = _k[layer]!.narrow(2, len, t);
            using var dv = _v[layer]!.narrow(2, len, t);
            dk.copy_(k); dv.copy_(v);
        }
        _len[layer] = len + t;
        // Views of the used slots, in the caller's dispose scope; they keep the storage alive if the buffer is replaced.
        var (nk, nv) = Stored(layer);
        long start = _start[layer];
        if (len + t > keep)
        {
            // This step attends over everything; only the newest window - 1 slots, all that a later query can see,
            // are stored (a fresh exactly-filled buffer: the next step's Reserve grows it).
            long drop = len + t - keep;
            Set(layer, nk.narrow(2, drop, keep).contiguous(), nv.narrow(2, drop, keep).contiguous());
            _start[layer] = start + drop;
        }
        return (nk, nv, start);
    }

    /// <summary>
    /// Keeps only the given batch rows, in that order (a batched generation dropping finished rows), and drops the oldest
    /// <paramref name="trimLeft"/> slots of every row (padding no kept row needs): one copy per layer, into buffers with
    /// room for <see cref="ExpectedSlots"/> (counted after the trim) where set, so the next step writes in place.
    /// </summary>
    public void SelectRows(long[] rows, long trimLeft = 0)
    {
        if (trimLeft < 0 || trimLeft > Length) throw new ArgumentOutOfRangeException(nameof(trimLeft), $"cannot drop {trimLeft} of {Length} slots");
        for (int i = 0; i < _k.Length; i++)
        {
            if (_k[i] is null) continue;
            // A windowed layer may already have dropped some of these slots.
            long drop = Math.Max(0, trimLeft - _start[i]), start = Math.Max(0, _start[i] - trimLeft), stored = _len[i] - drop;
            var (nk, nv) = NewBuffers(_k[i]!, rows.Length, JoinedCapacity(i, start, stored));
            using (no_grad())
            using (var scope = NewDisposeScope())
            {
                for (int j = 0; j < rows.Length; j++)
                {
                    nk.narrow(0, j, 1).narrow(2, 0, stored).copy_(_k[i]!.narrow(0, rows[j], 1).narrow(2, drop, stored));
                    nv.narrow(0, j, 1).narrow(2, 0, stored).copy_(_v[i]!.narrow(0, rows[j], 1).narrow(2, drop, stored));
                }
            }
            Replace(i, nk, nv, start, stored);
        }
    }

    /// <summary>The slots a rebuilt layer (a join, rows leaving) has room for: the slots it holds, or where the caller
    /// said how many the rows will fill (<see cref="ExpectedSlots"/>) that many from its first stored slot; a sliding
    /// layer never more than its window (window - 1 stored between steps + the token a step attends with).</summary>
    long JoinedCapacity(int layer, long start, long stored) =>
        ExpectedSlots is { } e ? Math.Max(stored, Math.Min(e - start, _window[layer] ?? long.MaxValue)) : stored;

    /// <summary>Uninitialised key and value buffers of <paramref name="rows"/> rows and <paramref name="slots"/> slots, shaped and typed as <paramref name="like"/>, owned by the cache.</summary>
    static (Tensor K, Tensor V) NewBuffers(Tensor like, long rows, long slots)
    {
        long[] shape = [rows, like.shape[1], slots, like.shape[3]];
        return (empty(shape, like.dtype, like.device).DetachFromDisposeScope(), empty(shape, like.dtype, like.device).DetachFromDisposeScope());
    }

    /// <summary>Swaps a layer's buffers for rebuilt ones holding <paramref name="stored"/> slots from absolute slot <paramref name="start"/>.</summary>
    void Replace(int layer, Tensor k, Tensor v, long start, long stored)
    {
        _k[layer]?.Dispose(); _v[layer]?.Dispose();
        _k[layer] = k; _v[layer] = v;
        _start[layer] = start;
        _len[layer] = stored;
    }

    /// <summary>
    /// Joins <paramref name="others"/>' rows after this cache's rows, in order (continuous batching). Every side is
    /// left-padded with zero slots so all rows end at the newest token; callers mask those slots out with an attention
    /// mask. Each layer is built once, in a buffer with room for <see cref="ExpectedSlots"/> where the caller set it
    /// (the server: every joined row's prompt + max_tokens), so the decode steps after the join write in place instead of
    /// growing an exactly-filled buffer (one more copy of the whole cache). Each of <paramref name="others"/>' layers is
    /// released once copied, so the join holds one layer's new buffers beyond the rows' caches; they are left empty.
    /// </summary>
    public void AppendRows(params IReadOnlyList<KvCache> others)
    {
        var parts = new List<KvCache>(others.Count + 1);
        if (_k[0] is not null) parts.Add(this);
        foreach (var o in others)
        {
            if (o._k.Length != _k.Length) throw new ArgumentException($"caches have {_k.Length} and {o._k.Length} layers");
            if (o._k[0] is null) throw new ArgumentException("the cache to append is empty");
            parts.Add(o);
        }
        long len = parts.Max(p => p.Length);
        long[] lengths = parts.Select(p => p.Length).ToArray();
        for (int i = 0; i < _k.Length; i++)
        {
            // Every side ends at the newest slot; each starts where its stored keys start once left-padded to len.
            long start = parts.Select((p, j) => p._start[i] + len - lengths[j]).Min(), stored = len - start;
            _window[i] = parts[0]._window[i];
            var (nk, nv) = NewBuffers(parts[0]._k[i]!, parts.Sum(p => p._k[i]!.shape[0]), JoinedCapacity(i, start, stored));
            using (no_grad())
            {
                long row = 0;
                for (int j = 0; j < parts.Count; j++)
                {
                    var p = parts[j];
                    long n = p._k[i]!.shape[0], pad = p._start[i] + len - lengths[j] - start;
                    using var scope = NewDisposeScope();
                    var (pk, pv) = p.Stored(i);
                    if (pad > 0) { nk.narrow(0, row, n).narrow(2, 0, pad).zero_(); nv.narrow(0, row, n).narrow(2, 0, pad).zero_(); }
                    nk.narrow(0, row, n).narrow(2, pad, p._len[i]).copy_(pk);
                    nv.narrow(0, row, n).narrow(2, pad, p._len[i]).copy_(pv);
                    row += n;
                    if (p != this) p.Release(i);
                }
            }
            Replace(i, nk, nv, start, stored);
        }
    }

    /// <summary>Frees a layer's buffers (a joined cache's, once copied).</summary>
    void Release(int layer)
    {
        _k[layer]?.Dispose(); _v[layer]?.Dispose();
        _k[layer] = _v[layer] = null;
        _start[layer] = 0;
        _len[layer] = 0;
    }

    /// <summary>Drops the oldest <paramref name="slots"/> slots of every row (padding no row needs any more).</summary>
    public void TrimLeft(long slots)
    {
        if (slots > 0 && _k[0] is { } k) SelectRows([.. Enumerable.Range(0, (int)k.shape[0]).Select(r => (long)r)], slots);
    }

    /// <summary>Forgets every cached slot (the cache is then empty and reusable).</summary>
    public void Clear() => Dispose();

    public void Dispose()
    {
        for (int i = 0; i < _k.Length; i++) Release(i);
    }
}
