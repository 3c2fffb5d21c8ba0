using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Per-layer keys and values of the tokens seen so far, [B, kvHeads, S, headDim]. Grows by concatenation:
/// simple and exact; generation lengths here are short next to the cost of the projections.
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor?[] _k, _v;

    public KvCache(int layers)
    {
        _k = new Tensor?[layers];
        _v = new Tensor?[layers];
    }

    /// <summary>Tokens already cached (the position of the next token).</summary>
    public long Length => _k[0]?.shape[2] ?? 0;

    /// <summary>Appends this step's keys/values and returns the full ones (owned by the cache).</summary>
    public (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        // The cache owns its tensors across steps, so they leave whatever dispose scope the caller has open.
        var nk = (_k[layer] is { } pk ? cat([pk, k.detach()], 2) : k.detach()).DetachFromDisposeScope();
        var nv = (_v[layer] is { } pv ? cat([pv, v.detach()], 2) : v.detach()).DetachFromDisposeScope();
        _k[layer]?.Dispose();
        _v[layer]?.Dispose();
        _k[layer] = nk;
        _v[layer] = nv;
        return (nk, nv);
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
        long len = Math.Max(Length, other.Length);
        for (int i = 0; i < _k.Length; i++)
        {
            if (other._k[i] is null) throw new ArgumentException("the cache to append is empty");
            if (_k[i] is null) { _k[i] = other._k[i]!.clone().DetachFromDisposeScope(); _v[i] = other._v[i]!.clone().DetachFromDisposeScope(); continue; }
            var nk = cat([LeftPad(_k[i]!, len), LeftPad(other._k[i]!, len)], 0).DetachFromDisposeScope();
            var nv = cat([LeftPad(_v[i]!, len), LeftPad(other._v[i]!, len)], 0).DetachFromDisposeScope();
            _k[i]!.Dispose(); _v[i]!.Dispose();
            _k[i] = nk; _v[i] = nv;
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
            var nk = _k[i]!.narrow(2, slots, _k[i]!.shape[2] - slots).contiguous().DetachFromDisposeScope();
            var nv = _v[i]!.narrow(2, slots, _v[i]!.shape[2] - slots).contiguous().DetachFromDisposeScope();
            _k[i]!.Dispose(); _v[i]!.Dispose();
            _k[i] = nk; _v[i] = nv;
        }
    }

    static Tensor LeftPad(Tensor t, long len)
    {
        long pad = len - t.shape[2];
        return pad == 0 ? t : nn.functional.pad(t, [0, 0, pad, 0]);
    }

    public void Dispose()
    {
        for (int i = 0; i < _k.Length; i++)
        {
            _k[i]?.Dispose(); _v[i]?.Dispose();
            _k[i] = _v[i] = null;
        }
    }
}
