using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>PEFT's merge_utils (task arithmetic, TIES, DARE) over task tensors stacked on dim 0.</summary>
internal static class MergeMath
{
    public static Tensor TaskArithmetic(IReadOnlyList<Tensor> tasks, double[] weights)
    {
        using var scope = NewDisposeScope();
        var t = stack(tasks);
        return (t * Weights(weights, t)).sum(0L).MoveToOuterDisposeScope();
    }

    /// <summary>Keep the top density·numel entries by magnitude, elect a sign per entry, average the agreeing ones.</summary>
    public static Tensor Ties(IReadOnlyList<Tensor> tasks, double[] weights, double density, string majoritySignMethod = "total")
    {
        using var scope = NewDisposeScope();
        var t = stack(tasks.Select(x => MagnitudePrune(x, density)).ToArray());
        var sign = t.sign();
        var magnitude = majoritySignMethod switch
        {
            "total" => t.sum(0L),
            "frequency" => sign.sum(0L),
            _ => throw new ArgumentException($"majority_sign_method '{majoritySignMethod}' is not total or frequency"),
        };
        var majority = where(ScalarArgs.With(0L, zero => magnitude.ge(zero)), ones_like(magnitude), -ones_like(magnitude));
        var mask = sign.eq(majority).to_type(t.dtype);
        var weighted = t * Weights(weights, t);
        var kept = ScalarArgs.With(1.0, one => mask.sum(0L).clamp_min(one));
        return ((weighted * mask).sum(0L) / kept).MoveToOuterDisposeScope();
    }

    /// <summary>DARE: drop entries with probability 1-density, rescale survivors by 1/density, weighted sum.</summary>
    public static Tensor DareLinear(IReadOnlyList<Tensor> tasks, double[] weights, double density, Generator g)
    {
        using var scope = NewDisposeScope();
        var t = stack(tasks.Select(x => RandomPrune(x, density, g)).ToArray());
        return (t * Weights(weights, t)).sum(0L).MoveToOuterDisposeScope();
    }

    public static Tensor MagnitudePrune(Tensor x, double density)
    {
        CheckDensity(density);
        if (density >= 1) return x.alias();
        using var scope = NewDisposeScope();
        long k = (long)(density * x.numel());
        var flat = x.reshape(-1);
        var mask = zeros_like(flat);
        if (k > 0) ScalarArgs.With(1.0, one => mask.index_fill_(0, flat.abs().topk((int)k).indexes, one));
        return (x * mask.reshape(x.shape)).MoveToOuterDisposeScope();
    }

    public static Tensor RandomPrune(Tensor x, double density, Generator g)
    {
        CheckDensity(density);
        if (density >= 1) return x.alias();
        using var scope = NewDisposeScope();
        var keep = ScalarArgs.With(density, d => rand(x.shape, ScalarType.Float32, generator: g).lt(d)).to_type(x.dtype);
        return (x * keep).DividedBy(density).MoveToOuterDisposeScope();
    }

    static void CheckDensity(double density)
    {
        if (density < 0) throw new ArgumentException($"density must be >= 0, got {density}");
    }

    static Tensor Weights(double[] w, Tensor stacked)
    {
        var shape = new long[stacked.dim()];
        Array.Fill(shape, 1L);
        shape[0] = w.Length;
        return tensor(w, dtype: stacked.dtype, device: stacked.device).view(shape);
    }
}
