using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Per-layer keys and values of the tokens seen so far, [B, kvHeads, stored, headDim]. Grows by concatenation:
/// simple and exact; generation lengths here are short next to the cost of the projections.
/// A sliding-window layer keeps only the newest window - 1 slots (all a later query can see), so its memory stays
/// bounded; each layer remembers the absolute slot its stored keys start at, so masks over all slots still apply.
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor?[] _k, _v;
    readonly long[] _start;

    public KvCache(int layers)
    {
        _k = new Tensor?[layers];
        _v = new Tensor?[layers];
        _start = new long[layers];
    }

    /// <summary>Tokens already cached (the position of the next token), counting slots a window has dropped.</summary>
    public long Length => _k[0] is { } k ? _start[0] + k.shape[2] : 0;

    /// <summary>Slots a layer actually holds (at most window - 1 between steps for a sliding layer).</summary>
    public long StoredSlots(int layer) => _k[layer]?.shape[2] ?? 0;

    /// <summary>Appends this step's keys/values and returns the full ones (owned by the cache).</summary>
    public (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v) { var (K, V, _) = Append(layer, k, v, null); return (K, V); }

    /// <summary>
    /// Appends this step's keys/values; returns the keys/values this step attends over and the absolute slot of
    /// their first row (callers narrow a mask over all slots from there). With a <paramref name="window"/>, the
    /// stored slots are then cut to the newest window - 1.
    /// </summary>
    public (Tensor K, Tensor V, long Start) Append(int layer, Tensor k, Tensor v, int? window)
    {
        var nk = _k[layer] is { } pk ? cat([pk, k.detach()], 2) : k.detach();
        var nv = _v[layer] is { } pv ? cat([pv, v.detach()], 2) : v.detach();
        _k[layer]?.Dispose();
        _v[layer]?.Dispose();
        long start = _start[layer];
        long keep = window is { } w ? Math.Max(0, w - 1) : long.MaxValue;
        if (nk.shape[2] > keep)
        {
            // This step attends over everything (nk stays in the caller's dispose scope); only the newest
            // window - 1 slots, all that a later query can see, are stored.
            long drop = nk.shape[2] - keep;
            _k[layer] = nk.narrow(2, drop, keep).contiguous().DetachFromDisposeScope();
            _v[layer] = nv.narrow(2, drop, keep).contiguous().DetachFromDisposeScope();
            _start[layer] = start + drop;
            return (nk, nv, start);
        }
        // The cache owns its tensors across steps, so they leave whatever dispose scope the caller has open.
        _k[layer] = nk.DetachFromDisposeScope();
        _v[layer] = nv.DetachFromDisposeScope();
        return (nk, nv, start);
    }

    /// <summary>Keeps only the given batch rows (used when a batched generation drops finished rows).</summary>
    public void SelectRows(long[] rows)
    {
        using var idx = tensor(rows);
        for (int i = 0; i < _k.Length; i++)
        {
            if (_k[i] is null) continue;
            var nk = _k[i]!.index_select(0, idx.to(_k[i]!.device));
            var nv = _v[i]!.index_select(0, idx.to(_v[i]!.device));
            nk.DetachFromDisposeScope(); nv.DetachFromDisposeScope();
            _k[i]!.Dispose(); _v[i]!.Dispose();
            _k[i] = nk; _v[i] = nv;
        }
    }

    /// <summary>
    /// Joins <paramref name="other"/>'s rows after this cache's rows (continuous batching). The shorter side is
    /// left-padded with zero slots so both end at the newest token; callers mask those slots out with an
    /// attention mask. <paramref name="other"/> is left unchanged.
    /// </summary>
    public void AppendRows(KvCache other)
    {
        if (other._k.Length != _k.Length) throw new ArgumentException($"caches have {_k.Length} and {other._k.Length} layers");
        long len = Math.Max(Length, other.Length), mine = Length, theirs = other.Length;
        for (int i = 0; i < _k.Length; i++)
        {
            if (other._k[i] is null) throw new ArgumentException("the cache to append is empty");
            if (_k[i] is null)
            {
                _k[i] = other._k[i]!.clone().DetachFromDisposeScope(); _v[i] = other._v[i]!.clone().DetachFromDisposeScope();
                _start[i] = other._start[i];
                continue;
            }
            // Both sides end at the newest slot; each starts where its stored keys start once left-padded to len.
            long start = Math.Min(_start[i] + len - mine, other._start[i] + len - theirs), stored = len - start;
            var nk = cat([LeftPad(_k[i]!, stored), LeftPad(other._k[i]!, stored)], 0).DetachFromDisposeScope();
            var nv = cat([LeftPad(_v[i]!, stored), LeftPad(other._v[i]!, stored)], 0).DetachFromDisposeScope();
            _k[i]!.Dispose(); _v[i]!.Dispose();
            _k[i] = nk; _v[i] = nv;
            _start[i] = start;
        }
    }

    /// <summary>Drops the oldest <paramref name="slots"/> slots of every row (padding no row needs any more).</summary>
    public void TrimLeft(long slots)
    {
        if (slots <= 0) return;
        if (slots > Length) throw new ArgumentOutOfRangeException(nameof(slots), $"cannot drop {slots} of {Length} slots");
        for (int i = 0; i < _k.Length; i++)
        {
            if (_k[i] is null) continue;
            // A windowed layer may already have dropped some of these slots.
            long drop = Math.Max(0, slots - _start[i]);
            _start[i] = Math.Max(0, _start[i] - slots);
            if (drop == 0) continue;
            var nk = _k[i]!.narrow(2, drop, _k[i]!.shape[2] - drop).contiguous().DetachFromDisposeScope();
            var nv = _v[i]!.narrow(2, drop, _v[i]!.shape[2] - drop).contiguous().DetachFromDisposeScope();
            _k[i]!.Dispose(); _v[i]!.Dispose();
            _k[i] = nk; _v[i] = nv;
        }
    }

    static Tensor LeftPad(Tensor t, long len)
    {
        long pad = len - t.shape[2];
        return pad == 0 ? t : nn.functional.pad(t, [0, 0, pad, 0]);
    }

    /// <summary>Forgets every cached slot (the cache is then empty and reusable).</summary>
    public void Clear() => Dispose();

    public void Dispose()
    {
        for (int i = 0; i < _k.Length; i++)
        {
            _k[i]?.Dispose(); _v[i]?.Dispose();
            _k[i] = _v[i] = null;
            _start[i] = 0;
        }
    }
}
