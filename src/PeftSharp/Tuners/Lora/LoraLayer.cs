using PeftSharp.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// LoRA (and DoRA when <see cref="Magnitude"/> is set) on one <see cref="TunableLinear"/>, computed as PEFT does:
/// <c>y = base(x) + B(A(dropout(x))) * s</c>; DoRA rescales by <c>m / ||W + s·B·A||</c> (row norms, detached).
/// Adapter tensors may have a wider dtype than the base (fp32 adapters on a 16-bit base): while training, the adapter
/// matmuls run in the base's dtype on 16-bit copies of A and B (torch.autocast's way); otherwise x is cast up and the
/// sum cast back once (PEFT's type promotion).
/// </summary>
internal sealed class LoraLayer : ILinearAdapter
{
    public string AdapterName { get; }
    public Parameter A { get; }
    public Parameter B { get; }
    public Parameter? Magnitude { get; }
    public int Rank { get; }
    public double Scaling { get; }
    public double Dropout { get; }
    public bool IsDora => Magnitude is not null;
    /// <summary>DoRA row norms cached when merged; unmerge needs the norm of the original W.</summary>
    Tensor? _mergedNorm;

    public LoraLayer(string adapterName, Tensor a, Tensor b, Tensor? magnitude, double scaling, double dropout, bool trainable)
    {
        AdapterName = adapterName;
        A = new Parameter(a, trainable);
        B = new Parameter(b, trainable);
        Magnitude = magnitude is null ? null : new Parameter(magnitude, trainable);
        Rank = (int)A.shape[0];
        Scaling = scaling;
        Dropout = dropout;
    }

    public IEnumerable<(string Key, Parameter Param)> NamedParameters()
    {
        yield return ("lora_A.weight", A);
        yield return ("lora_B.weight", B);
        if (Magnitude is not null) yield return ("lora_magnitude_vector", Magnitude);
    }

    public long ParameterCount => NamedParameters().Sum(p => p.Param.numel());

    public Tensor Apply(Tensor x, Tensor baseOut, TunableLinear layer)
    {
        using var profile = ForwardProfiler.Measure("lora adapter");
        using var scope = NewDisposeScope();
        // The module's own training flag (train()/eval(), as PyTorch's nn.Dropout reads it), so Trainer's train() turns it on.
        bool drop = Dropout > 0 && layer.training;
        if (Magnitude is null && TrainsInComputeDtype(x, baseOut, layer)) return AutocastLora(x, baseOut, drop).MoveToOuterDisposeScope();
        var xa = x.dtype == A.dtype ? x : x.to_type(A.dtype);
        var xd = drop ? nn.functional.dropout(xa, Dropout, true) : xa;
        if (Magnitude is null) return AddScaledLora(baseOut, nn.functional.linear(xd, A)).MoveToOuterDisposeScope();
        var lora = nn.functional.linear(nn.functional.linear(xd, A), B);
        var w = layer.DenseWeight(A.dtype);
        var scale = (Magnitude / RowNorm(w)).view(1, -1);
        // PEFT reuses the base output when no dropout ran; otherwise it recomputes W·dropout(x) without bias.
        var baseNoBias = drop ? nn.functional.linear(xd, w)
            : (layer.bias is null ? baseOut : baseOut - layer.bias).to_type(A.dtype);
        var delta = (scale.Minus(1) * baseNoBias).Plus((scale * lora).Times(Scaling));
        return AddDelta(baseOut, delta).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Mixed-precision training (a 16-bit base and activations, trainable fp32 adapters, the module in train() mode,
    /// which the trainer sets for its steps; not "gradients recorded", since gradient checkpointing runs the first forward
    /// without them and must compute as its recompute does): the adapter matmuls
    /// run in the compute dtype, as under torch.autocast (HF Trainer's bf16=True), on 16-bit copies of the small A and B
    /// whose gradients flow back to the fp32 parameters. The fp32 path would cast the whole [.., in] input up, the
    /// [.., out] base output up and back, and their gradients likewise (four full-activation casts per module per step).
    /// DoRA and inference (eval, generate, serve) keep PEFT's type-promotion path: fp32 adapter math, one rounding.
    /// </summary>
    bool TrainsInComputeDtype(Tensor x, Tensor baseOut, TunableLinear layer) =>
        x.dtype != A.dtype && x.dtype is (ScalarType.BFloat16 or ScalarType.Float16) && baseOut.dtype == x.dtype
        && A.requires_grad && layer.training;

    /// <summary>
    /// baseOut + s·(x·A16ᵀ)·B16ᵀ as one addmm in the compute dtype. Its scaling is addmm's alpha, applied with the
    /// product to the fp32 accumulator, so the LoRA product is added to the base output before the single rounding to
    /// 16 bits (rounding the delta first, then the sum, made bf16 memorisation oscillate); only the rank-r activations
    /// x·A16ᵀ and the 16-bit A/B copies are rounded, as autocast rounds them.
    /// </summary>
    Tensor AutocastLora(Tensor x, Tensor baseOut, bool drop)
    {
        var xd = drop ? nn.functional.dropout(x, Dropout, true) : x;
        var down = nn.functional.linear(xd, A.to_type(x.dtype));
        long outF = B.shape[0];
        return addmm(baseOut.contiguous().view(-1, outF), down.view(-1, Rank), B.to_type(x.dtype).t(), 1, (float)Scaling).view(baseOut.shape);
    }

    /// <summary>
    /// baseOut + delta in the base output's dtype. As PEFT (type promotion): a 16-bit base output plus an fp32 delta is
    /// summed in fp32, then cast back once (rounding the delta first made bf16 memorisation oscillate).
    /// </summary>
    internal static Tensor AddDelta(Tensor baseOut, Tensor delta) =>
        delta.dtype == baseOut.dtype ? baseOut.Plus(delta) : baseOut.to_type(delta.dtype).Plus(delta).to_type(baseOut.dtype);

    /// <summary>
    /// baseOut + s·(xA)·Bᵀ for <paramref name="xa"/> = x·Aᵀ [.., r]: the scaling goes on the rank-r activations
    /// (r columns, not out), and the sum is one addmm that accumulates into a copy of baseOut (no [.., out] LoRA
    /// product, scaled product and sum as three tensors). Any dtype; a base output of another dtype than the adapter's, or
    /// not contiguous, goes through <see cref="AddDelta"/>.
    /// </summary>
    Tensor AddScaledLora(Tensor baseOut, Tensor xa)
    {
        var down = xa.Times(Scaling);
        if (baseOut.dtype != B.dtype || !baseOut.is_contiguous()) return AddDelta(baseOut, nn.functional.linear(down, B));
        long outF = B.shape[0];
        return addmm(baseOut.view(-1, outF), down.view(-1, Rank), B.t(), 1, 1).view(baseOut.shape);
    }

    /// <summary>s·B·A [out, in] in the adapter dtype.</summary>
    public Tensor DeltaWeight() => DeltaWeight(A, B, Scaling);

    static Tensor DeltaWeight(Tensor a, Tensor b, double scaling) => ScalarArgs.With(scaling, s => b.matmul(a).mul_(s));

    /// <summary>DoRA's detached norm ||W + s·B·A|| over the input dim of each output row.</summary>
    Tensor RowNorm(Tensor w) => RowNorm(w, A, B, Scaling);

    /// <summary>
    /// DoRA's detached row norms ||W + s·B·A||, also DoRA's initial magnitude (so the initial model equals the base).
    /// </summary>
    internal static Tensor RowNorm(Tensor w, Tensor a, Tensor b, double scaling)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return w.Plus(DeltaWeight(a, b, scaling)).norm(1, false).detach().MoveToOuterDisposeScope();
    }

    public Tensor MergedWeight(Tensor baseWeight)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var w = baseWeight.to_type(A.dtype);
        var merged = w.Plus(DeltaWeight());
        if (Magnitude is not null)
        {
            _mergedNorm?.Dispose();
            _mergedNorm = RowNorm(w).DetachFromDisposeScope();
            merged = merged * (Magnitude / _mergedNorm).view(-1, 1);
        }
        return merged.to_type(baseWeight.dtype).MoveToOuterDisposeScope();
    }

    public Tensor UnmergedWeight(Tensor mergedWeight)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var w = mergedWeight.to_type(A.dtype);
        if (Magnitude is not null)
        {
            if (_mergedNorm is null) throw new InvalidOperationException($"{AdapterName}: DoRA unmerge without a prior merge");
            w = w / (Magnitude / _mergedNorm).view(-1, 1);
        }
        return (w - DeltaWeight()).to_type(mergedWeight.dtype).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
        Magnitude?.Dispose();
        _mergedNorm?.Dispose();
    }
}
