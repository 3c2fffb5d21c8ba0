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

    public void Dispose()
    {
        for (int i = 0; i < _k.Length; i++)
        {
            _k[i]?.Dispose(); _v[i]?.Dispose();
            _k[i] = _v[i] = null;
        }
    }
}
