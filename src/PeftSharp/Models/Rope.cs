using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Rotary position embedding, "rotate_half" layout, over the first <see cref="RotaryDim"/> dims of each head
/// (Phi's partial_rotary_factor; the rest pass through), with Llama 3.1 or Phi-3 "longrope" scaling.
/// Disposing frees the tables <see cref="CosSinFromStart"/> cached (the model disposes its Rope).
/// </summary>
internal sealed class Rope : IDisposable
{
    readonly double[] _invFreq;
    readonly double[]? _longInvFreq;
    readonly RopeScaling? _scaling;
    public int HeadDim { get; }
    public int RotaryDim { get; }

    public Rope(ModelConfig c)
    {
        HeadDim = c.HeadDim;
        RotaryDim = c.RotaryDim > 0 ? c.RotaryDim : c.HeadDim;
        _scaling = c.RopeScaling;
        _invFreq = InverseFrequencies(RotaryDim, c.RopeTheta, c.RopeScaling);
        if (c.RopeScaling is { Type: "longrope" }) _longInvFreq = InverseFrequencies(RotaryDim, c.RopeTheta, c.RopeScaling, longContext: true);
    }

    /// <param name="dim">The rotary dimension (head_dim, or partial_rotary_factor of it).</param>
    /// <param name="theta">rope_theta.</param>
    /// <param name="scaling">config.json's rope_scaling (llama3 or longrope), null for plain RoPE.</param>
    /// <param name="longContext">longrope only: the long factors (sequences past original_max_position_embeddings).</param>
    public static double[] InverseFrequencies(int dim, double theta, RopeScaling? scaling, bool longContext = false)
    {
        var inv = new double[dim / 2];
        for (int i = 0; i < inv.Length; i++) inv[i] = 1.0 / Math.Pow(theta, 2.0 * i / dim);
        if (scaling is { Type: "longrope" } lr)
        {
            var ext = longContext ? lr.LongFactor! : lr.ShortFactor!;
            for (int i = 0; i < inv.Length; i++) inv[i] /= ext[i];
        }
        if (scaling is { Type: "llama3" } s)
        {
            double lowWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
            double highWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
            for (int i = 0; i < inv.Length; i++)
            {
                double wavelen = 2 * Math.PI / inv[i];
                if (wavelen > lowWavelen) inv[i] /= s.Factor;
                else if (wavelen >= highWavelen)
                {
                    double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    inv[i] = (1 - smooth) * inv[i] / s.Factor + smooth * inv[i];
                }
            }
        }
        return inv;
    }

    /// <summary>
    /// The frequencies transformers uses for a forward whose largest position is <paramref name="maxPosition"/>:
    /// longrope switches to the long factors once max position + 1 exceeds original_max_position_embeddings
    /// (its dynamic_rope_update), otherwise the one fixed set.
    /// </summary>
    public double[] FrequenciesFor(long maxPosition) =>
        _longInvFreq is not null && maxPosition + 1 > _scaling!.OriginalMaxPositionEmbeddings ? _longInvFreq : _invFreq;

    /// <summary>The tables <see cref="CosSinFromStart"/> keeps: positions 0..T-1 for the longest T asked so far, one
    /// dtype and device (another replaces them).</summary>
    (long T, ScalarType Dtype, DeviceType Device, int Index, Tensor Cos, Tensor Sin)? _fromStart;
    readonly object _fromStartLock = new();

    /// <summary>
    /// <see cref="CosSin"/> for positions 0..t-1 in each of <paramref name="batch"/> rows (a forward without attention
    /// mask or cache: every training step whose rows are not padded), as views of [1, 1, T, rotaryDim] tables kept
    /// for the longest T asked so far (one dtype and device): building them was float64 angles, cos, sin and two casts
    /// every forward (0.69 ms of the LoRA bench's step). The same values as <see cref="CosSin"/> (each entry is a
    /// function of its position alone); one pair of tensors however the lengths vary, so live tensor counts stay flat.
    /// longrope picks its factors by the largest position: it keeps building them. The returned views are the
    /// caller's to dispose; the tables live until this Rope is disposed.
    /// </summary>
    public (Tensor Cos, Tensor Sin) CosSinFromStart(long batch, long t, ScalarType dtype, Device device)
    {
        long[] shape = [batch, 1, t, RotaryDim];
        if (_longInvFreq is not null)
        {
            using var scope = NewDisposeScope();
            var (c, s) = CosSin(ScalarArgs.Arange(t, ScalarType.Int64, device).unsqueeze(0).expand(batch, t), dtype);
            return (c.MoveToOuterDisposeScope(), s.MoveToOuterDisposeScope());
        }
        lock (_fromStartLock)
        {
            if (_fromStart is not { } e || e.T < t || e.Dtype != dtype || e.Device != device.type || e.Index != device.index)
            {
                Dispose();
                Tensor cos, sin;
                using (var scope = NewDisposeScope())
                {
                    (cos, sin) = CosSin(ScalarArgs.Arange(t, ScalarType.Int64, device).unsqueeze(0), dtype);
                    cos.DetachFromDisposeScope();
                    sin.DetachFromDisposeScope();
                }
                _fromStart = e = (t, dtype, device.type, device.index, cos, sin);
            }
            using Tensor cosT = e.Cos.narrow(2, 0, t), sinT = e.Sin.narrow(2, 0, t);
            return (cosT.expand(shape), sinT.expand(shape));
        }
    }

    /// <summary>Frees the kept tables.</summary>
    public void Dispose()
    {
        lock (_fromStartLock)
        {
            if (_fromStart is { } e) { e.Cos.Dispose(); e.Sin.Dispose(); }
            _fromStart = null;
        }
    }

    /// <summary>cos and sin of shape [B, 1, T, rotaryDim] for integer positions [B, T], in <paramref name="dtype"/>.</summary>
    public (Tensor Cos, Tensor Sin) CosSin(Tensor positions, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        // Every row at the same positions (no attention mask: an expanded arange): one row's tables, expanded.
        if (positions.shape[0] > 1 && positions.stride(0) == 0)
        {
            var (c, s) = CosSin(positions.narrow(0, 0, 1), dtype);
            long[] shape = [positions.shape[0], 1, positions.shape[1], c.shape[^1]];
            return (c.expand(shape).MoveToOuterDisposeScope(), s.expand(shape).MoveToOuterDisposeScope());
        }
        var freqs = _longInvFreq is null ? _invFreq : FrequenciesFor(positions.numel() == 0 ? 0 : positions.max().item<long>());
        // Angles in float64: positions up to 128k times frequencies lose digits in fp32.
        var inv = tensor(freqs, ScalarType.Float64, positions.device);
        var ang = positions.to_type(ScalarType.Float64).unsqueeze(-1) * inv;   // [B, T, rd/2]
        var emb = cat([ang, ang], -1).unsqueeze(1);                             // [B, 1, T, rd]
        double scale = _scaling?.AttentionFactor ?? 1.0;                         // longrope's attention scaling
        var cos = emb.cos().Times(scale).to_type(dtype);
        var sin = emb.sin().Times(scale).to_type(dtype);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary>Rotates the first cos.shape[-1] dims of each head; the remaining dims pass through unchanged.</summary>
    /// <remarks>
    /// x * cos + rotate_half(x) * sin without building rotate_half(x): each half is its own product with cos, plus
    /// the other half's term added in place (x1 c - x2 s, x2 c + x1 s via addcmul_ with value -1 / +1; the product
    /// is fresh and its backward keeps x and cos, not the product, so autograd allows it), then one cat. The same
    /// products and sums as the textbook form (addcmul rounds the multiply-add once, so the last bit may differ), in
    /// about two thirds of the memory traffic.
    /// </remarks>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var profile = ForwardProfiler.Measure("rope");
        using var scope = NewDisposeScope();
        long rd = cos.shape[^1], full = x.shape[^1];
        var xr = rd == full ? x : x.narrow(-1, 0, rd);
        long half = rd / 2;
        Tensor x1 = xr.narrow(-1, 0, half), x2 = xr.narrow(-1, half, half);
        var first = (x1 * cos.narrow(-1, 0, half)).addcmul_(x2, sin.narrow(-1, 0, half), ScalarArgs.MinusOne);
        var second = (x2 * cos.narrow(-1, half, half)).addcmul_(x1, sin.narrow(-1, half, half), ScalarArgs.One);
        var result = rd == full ? cat([first, second], -1) : cat([first, second, x.narrow(-1, rd, full - rd)], -1);
        return result.MoveToOuterDisposeScope();
    }
}
