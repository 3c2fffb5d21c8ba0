using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>Rotary position embedding, "rotate_half" layout, with optional Llama 3.1 frequency scaling.</summary>
public sealed class Rope
{
    readonly double[] _invFreq;
    public int HeadDim { get; }

    public Rope(ModelConfig c)
    {
        HeadDim = c.HeadDim;
        _invFreq = InverseFrequencies(c.HeadDim, c.RopeTheta, c.RopeScaling);
    }

    public static double[] InverseFrequencies(int headDim, double theta, RopeScaling? scaling)
    {
        var inv = new double[headDim / 2];
        for (int i = 0; i < inv.Length; i++) inv[i] = 1.0 / Math.Pow(theta, 2.0 * i / headDim);
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

    /// <summary>cos and sin of shape [B, 1, T, headDim] for integer positions [B, T], in <paramref name="dtype"/>.</summary>
    public (Tensor Cos, Tensor Sin) CosSin(Tensor positions, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        // Angles in float64: positions up to 128k times frequencies lose digits in fp32.
        var inv = tensor(_invFreq, ScalarType.Float64, positions.device);
        var ang = positions.to_type(ScalarType.Float64).unsqueeze(-1) * inv;   // [B, T, hd/2]
        var emb = cat([ang, ang], -1).unsqueeze(1);                             // [B, 1, T, hd]
        var cos = emb.cos().to_type(dtype);
        var sin = emb.sin().to_type(dtype);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = cat([x2.neg(), x1], -1);
        return (x * cos + rotated * sin).MoveToOuterDisposeScope();
    }
}
