using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// Mixed-adapter batch (each row names its adapter) in one gathered computation per layer: the A and B of the
/// adapters in use are stacked with ranks zero-padded to the largest, gathered per row and applied with bmm;
/// rows without an adapter get scale 0. Zero padding adds exact zeros, so each row equals its own single pass.
/// </summary>
internal static class LoraMixedBatch
{
    /// <summary>Signature of <see cref="TunableLinear.MixedBatchApply"/>; null means "use the per-row path".</summary>
    public static Tensor? Apply(Tensor x, Tensor y, TunableLinear layer, string?[] rows)
    {
        if (x.dim() != 3) return null;
        var used = rows.Where(n => n is not null && n != layer.MergedAdapter && layer.Adapters.ContainsKey(n)).Distinct().Select(n => n!).ToList();
        if (used.Count == 0) return y;
        var adapters = used.Select(n => layer.Adapters[n] as LoraLayer).ToList();
        // DoRA needs a per-adapter weight norm and dropout differs per row: both take the per-row path.
        if (adapters.Any(a => a is null || a.IsDora || (a.Dropout > 0 && layer.training))) return null;
        var loras = adapters.Select(a => a!).ToList();
        var dtype = loras[0].A.dtype;
        if (loras.Any(a => a.A.dtype != dtype)) return null;

        using var scope = NewDisposeScope();
        long rmax = loras.Max(a => (long)a.Rank);
        var aStack = stack(loras.Select(a => Pad(a.A, 0, rmax)).ToArray());   // [n, rmax, in]
        var bStack = stack(loras.Select(a => Pad(a.B, 1, rmax)).ToArray());   // [n, out, rmax]
        var index = new long[rows.Length];
        var scale = new float[rows.Length];
        for (int i = 0; i < rows.Length; i++)
        {
            int k = rows[i] is { } n ? used.IndexOf(n) : -1;
            index[i] = Math.Max(k, 0);
            scale[i] = k >= 0 ? (float)loras[k].Scaling : 0f;
        }
        var idx = tensor(index, device: x.device);
        var xa = x.dtype == dtype ? x : x.to_type(dtype);
        var h = xa.bmm(aStack.index_select(0, idx).transpose(1, 2));            // [b, t, rmax]
        var delta = h.bmm(bStack.index_select(0, idx).transpose(1, 2));         // [b, t, out]
        delta = delta * tensor(scale, device: x.device).to_type(dtype).view(-1, 1, 1);
        return LoraLayer.AddDelta(y, delta).MoveToOuterDisposeScope();   // as LoraLayer.Apply: one rounding
    }

    static Tensor Pad(Tensor t, int dim, long size) =>
        t.shape[dim] == size ? t : nn.functional.pad(t, dim == 0 ? new long[] { 0, 0, 0, size - t.shape[0] } : new long[] { 0, size - t.shape[1] });
}
