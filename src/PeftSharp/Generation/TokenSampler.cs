using static TorchSharp.torch;

namespace PeftSharp.Generation;

/// <summary>
/// Greedy or temperature + top-p (nucleus) sampling over one row of logits. Sampling runs in C# on a
/// seeded <see cref="Random"/>, so a seed gives the same tokens on any device.
/// </summary>
public sealed class TokenSampler
{
    readonly SamplingOptions _o;
    readonly Random _rng;

    public TokenSampler(SamplingOptions options)
    {
        options.Validate();
        _o = options;
        _rng = options.Seed is int s ? new Random(s) : new Random();
    }

    /// <summary>Picks the next token from logits of shape [V] (any float dtype, any device).</summary>
    public int Next(Tensor logits)
    {
        if (_o.Temperature == 0) return (int)logits.argmax().item<long>();
        using var f = logits.to_type(ScalarType.Float32).cpu();
        return Sample(f.data<float>().ToArray());
    }

    public int Sample(float[] logits)
    {
        int v = logits.Length;
        double max = double.NegativeInfinity;
        foreach (var l in logits) max = Math.Max(max, l);
        var p = new double[v];
        double sum = 0;
        for (int i = 0; i < v; i++) sum += p[i] = Math.Exp((logits[i] - max) / _o.Temperature);
        var order = Enumerable.Range(0, v).ToArray();
        Array.Sort(order, (a, b) => p[b].CompareTo(p[a]));
        // Nucleus: the smallest prefix of the sorted distribution whose mass reaches top_p.
        double mass = 0;
        int keep = 0;
        while (keep < v)
        {
            mass += p[order[keep]] / sum;
            keep++;
            if (mass >= _o.TopP) break;
        }
        double kept = 0;
        for (int i = 0; i < keep; i++) kept += p[order[i]];
        double u = _rng.NextDouble() * kept;
        for (int i = 0; i < keep; i++)
        {
            u -= p[order[i]];
            if (u <= 0) return order[i];
        }
        return order[keep - 1];
    }
}
