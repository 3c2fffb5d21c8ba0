using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Every projection of the decoder is one of these: a Linear whose frozen base is either a dense
/// <c>weight</c> (HF parameter name kept) or a quantised weight, plus named adapters. Adapters are chosen
/// after the model is built, so the forward path never changes which field it calls.
/// </summary>
internal sealed class TunableLinear : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // HF parameter names
    public Parameter? weight;
    public Parameter? bias;
#pragma warning restore IDE1006

    public string ModulePath { get; }
    public long InFeatures { get; }
    public long OutFeatures { get; }
    public IQuantizedWeight? Quantized { get; private set; }
    public Dictionary<string, ILinearAdapter> Adapters { get; } = new();
    public AdapterState State { get; }
    /// <summary>Non-null while an adapter is merged into the base weight (its name).</summary>
    public string? MergedAdapter { get; set; }
    /// <summary>Optional batched path for mixed-adapter batches (one computation for all rows).</summary>
    public Func<Tensor, Tensor, TunableLinear, string?[], Tensor?>? MixedBatchApply { get; set; }

    /// <param name="modulePath">The HF module name (model.layers.0.self_attn.q_proj); the last part names the module.</param>
    /// <param name="inFeatures">Input features.</param>
    /// <param name="outFeatures">Output features.</param>
    /// <param name="hasBias">Whether the base projection has a bias.</param>
    /// <param name="state">The model's adapter state (which adapters are active, disabled).</param>
    /// <param name="dtype">The dense weight's dtype.</param>
    /// <param name="quantizedBase">True: no dense weight is allocated; <see cref="SetQuantized"/> provides the base.</param>
    public TunableLinear(string modulePath, long inFeatures, long outFeatures, bool hasBias, AdapterState state, ScalarType dtype, bool quantizedBase = false)
        : base(modulePath.Split('.').Last())
    {
        ModulePath = modulePath;
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        State = state;
        if (!quantizedBase) weight = new Parameter(empty(outFeatures, inFeatures, dtype), requires_grad: false);
        if (hasBias) bias = new Parameter(zeros(outFeatures, dtype), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>Sets the quantised base of a layer built with quantizedBase: true.</summary>
    public void SetQuantized(IQuantizedWeight q)
    {
        if (weight is not null) throw new InvalidOperationException($"{ModulePath}: built with a dense weight; build the model quantised instead");
        if (q.Shape[0] != OutFeatures || q.Shape[1] != InFeatures)
            throw new ArgumentException($"{ModulePath}: quantised shape [{string.Join(", ", q.Shape)}] != [{OutFeatures}, {InFeatures}]");
        Quantized?.Dispose();
        Quantized = q;
    }

    /// <summary>
    /// The dense base weight in <paramref name="dtype"/>: the parameter itself when its dtype matches, otherwise a
    /// fresh tensor (dequantised or converted). Never dispose the result directly (it may be the module's own
    /// weight); create it inside a dispose scope, which frees fresh tensors and leaves the parameter alone.
    /// </summary>
    public Tensor DenseWeight(ScalarType dtype) =>
        Quantized is { } q ? q.Dequantize(dtype, q.Device)
        : weight!.dtype == dtype ? weight! : weight!.to_type(dtype);

    Kernels.PackedLinear.Pair? _packed;

    /// <summary>Whether the frozen weight is packed for MKL now (<see cref="Pack"/>).</summary>
    public bool IsPacked => _packed is not null;

    /// <summary>The packed copies while <see cref="IsPacked"/> (the lora-step bench times its GEMMs on them).</summary>
    internal Kernels.PackedLinear.Pair? PackedPair => _packed;

    /// <summary>Whether <see cref="Pack"/> takes this layer: a dense frozen fp32 weight on CPU, and no trainable bias (the
    /// packed node gives it no gradient).</summary>
    public bool CanPack => weight is { requires_grad: false } w && w.dtype == ScalarType.Float32 && w.device_type == DeviceType.CPU
        && bias is not { requires_grad: true };

    /// <summary>
    /// Packs the dense frozen fp32 weight for MKL (both orientations; <see cref="Kernels.PackedGemm"/>): later fp32 CPU
    /// forwards and their backwards skip MKL's per-call copy of it. False where <see cref="CanPack"/> is false or there is
    /// no MKL. Whoever changes the weight in place (a merge) calls <see cref="DropPacked"/>.
    /// </summary>
    public bool Pack(int rows)
    {
        if (_packed is not null) return true;
        if (!CanPack || !Kernels.PackedGemm.Available) return false;
        _packed = new Kernels.PackedLinear.Pair(weight!, rows);
        return true;
    }

    /// <summary>Frees the packed copies (the weight is about to change, or training is over).</summary>
    public void DropPacked()
    {
        _packed?.Dispose();
        _packed = null;
    }

    public Tensor BaseForward(Tensor x)
    {
        using var profile = ForwardProfiler.Measure(ModulePath == "lm_head" ? "lm_head" : Quantized is not null ? "base linear (4-bit: dequantise + matmul)" : "base linear (frozen matmul)");
        if (_packed is { } pair && Kernels.PackedLinear.Applies(x, pair))
        {
            if (pair.Source == Kernels.KernelSupport.Address(weight!)) return Kernels.PackedLinear.Compute(x, pair, bias);
            DropPacked();   // the weight was replaced (moved, reloaded): its packing is stale
        }
        return Quantized is { } q ? (bias is null ? q.Linear(x, x.dtype) : q.Linear(x, x.dtype).PlusInPlace(bias))
                                  : nn.functional.linear(x, weight!, bias);
    }

    public override Tensor forward(Tensor x)
    {
        var y = BaseForward(x);
        if (State.Disabled || Adapters.Count == 0) return y;
        if (State.RowAdapters is { } rows) return ApplyMixed(x, y, rows);
        foreach (var (name, w) in State.Active)
        {
            if (name == MergedAdapter || !Adapters.TryGetValue(name, out var a)) continue;
            if (w == 1.0) y = a.Apply(x, y, this);
            else
            {
                using var scope = NewDisposeScope();
                var adapted = a.Apply(x, y, this);
                y = y.Plus((adapted - y).Times(w)).MoveToOuterDisposeScope();
            }
        }
        return y;
    }

    /// <summary>Each row of the batch uses its own adapter (or none).</summary>
    Tensor ApplyMixed(Tensor x, Tensor y, string?[] rows)
    {
        if (rows.Length != x.shape[0]) throw new ArgumentException($"{ModulePath}: {rows.Length} row adapters for a batch of {x.shape[0]}");
        if (MixedBatchApply?.Invoke(x, y, this, rows) is { } fast) return fast;
        using var scope = NewDisposeScope();
        var outRows = new Tensor[rows.Length];
        for (int i = 0; i < rows.Length; i++)
        {
            var yi = y[i].unsqueeze(0);
            outRows[i] = rows[i] is { } n && n != MergedAdapter && Adapters.TryGetValue(n, out var a) ? a.Apply(x[i].unsqueeze(0), yi, this) : yi;
        }
        return cat(outRows, 0).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            foreach (var a in Adapters.Values) a.Dispose();
            Adapters.Clear();
            Quantized?.Dispose();
            DropPacked();
        }
        base.Dispose(disposing);
    }
}
