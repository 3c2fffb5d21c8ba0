using PeftSharp.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using static PeftSharp.Memory.ModuleNames.Llama;
using static PeftSharp.Memory.ModuleNames.Phi3;
using ModuleNames = PeftSharp.Memory.ModuleNames;

namespace PeftSharp.Models;

/// <summary>
/// Grouped-query self-attention with rotary positions (HF names: self_attn.{q,k,v,o}_proj). Family variants:
/// Phi-3's fused qkv_proj (then q/k/v_proj are null), Qwen3's per-head q_norm/k_norm, Gemma 2's score scale and
/// tanh soft-capping, and a sliding window on the layers the config marks.
/// </summary>
internal sealed class Attention : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    /// <summary>Null for Phi-3, whose checkpoints hold the fused <see cref="qkv_proj"/>; use <see cref="CausalLM.Linears"/> to enumerate.</summary>
    public TunableLinear q_proj = null!, k_proj = null!, v_proj = null!;
    public TunableLinear o_proj;
    /// <summary>Phi-3 only: rows are q, then k, then v.</summary>
    public TunableLinear? qkv_proj;
    /// <summary>Qwen3 only: RMSNorm over head_dim applied to every query / key head before rotary.</summary>
    public RmsNorm? q_norm, k_norm;
#pragma warning restore IDE1006
    readonly int _heads, _kvHeads, _headDim;
    readonly int? _window;
    readonly double _scale;
    readonly double? _softcap;
    readonly bool _explicitScores;

    public Attention(string prefix, int layer, ModelConfig c, AdapterState state, ScalarType dtype, Func<string, bool> quantized) : base(ModuleNames.SelfAttn)
    {
        _heads = c.NumHeads; _kvHeads = c.NumKvHeads; _headDim = c.HeadDim;
        _window = c.WindowOf(layer);
        _scale = c.AttentionScale > 0 ? c.AttentionScale : 1.0 / Math.Sqrt(c.HeadDim);
        _softcap = c.AttnLogitSoftcapping;
        // SDPA's built-in scale is 1/sqrt(head_dim) and it cannot soft-cap: other settings compute scores explicitly.
        _explicitScores = _softcap is not null || Math.Abs(_scale * Math.Sqrt(c.HeadDim) - 1) > 1e-12;
        long h = c.HiddenSize, qDim = (long)c.NumHeads * c.HeadDim, kvDim = (long)c.NumKvHeads * c.HeadDim;
        TunableLinear L(string n, long i, long o, bool b) => new($"{prefix}.{n}", i, o, b, state, dtype, quantized($"{prefix}.{n}"));
        if (c.FusedProjections) qkv_proj = L(QkvProj, h, qDim + 2 * kvDim, c.QkvBias);
        else
        {
            q_proj = L(QProj, h, qDim, c.QkvBias);
            k_proj = L(KProj, h, kvDim, c.QkvBias);
            v_proj = L(VProj, h, kvDim, c.QkvBias);
        }
        o_proj = L(OProj, qDim, h, c.OBias);
        if (c.QkNorm)
        {
            q_norm = new RmsNorm(QNorm, c.HeadDim, c.RmsNormEps, dtype);
            k_norm = new RmsNorm(KNorm, c.HeadDim, c.RmsNormEps, dtype);
        }
        RegisterComponents();
    }

    /// <summary>The projections in HF module order.</summary>
    public IEnumerable<TunableLinear> Projections() =>
        qkv_proj is not null ? [qkv_proj, o_proj] : [q_proj, k_proj, v_proj, o_proj];

    public override Tensor forward(Tensor x) => throw new NotSupportedException("use Forward(x, ctx, layer)");

    public Tensor Forward(Tensor x, ForwardContext ctx, int layer)
    {
        using var profile = ForwardProfiler.Measure("attention reshapes + cache");
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        long qDim = (long)_heads * _headDim, kvDim = (long)_kvHeads * _headDim;
        Tensor q, k, v;
        if (qkv_proj is not null)
        {
            var qkv = qkv_proj.forward(x);
            q = qkv.narrow(-1, 0, qDim); k = qkv.narrow(-1, qDim, kvDim); v = qkv.narrow(-1, qDim + kvDim, kvDim);
        }
        else { q = q_proj.forward(x); k = k_proj.forward(x); v = v_proj.forward(x); }
        q = q.reshape(b, t, _heads, _headDim);
        k = k.reshape(b, t, _kvHeads, _headDim);
        if (q_norm is not null) { q = q_norm.forward(q); k = k_norm!.forward(k); }
        var mask = ctx.MaskFor(_window);
        bool causalOnly = mask is null || (ctx.MaskIsTrailingPadding && ReferenceEquals(mask, ctx.Mask));
        if (ctx.Cache is null && causalOnly && !_explicitScores && CausalAttention.Applies(q, _headDim))
        {
            // The fused kernel: rotary applied inside where it spans the whole head, no repeated k/v for GQA, and
            // its output is already [B, T, H, D] for o_proj. Right-padded batches come here without their mask (see
            // ForwardContext.MaskIsTrailingPadding); a windowed layer whose window bites has its own mask and does not.
            bool fullRotary = ctx.Cos.shape[^1] == _headDim;
            q = q.transpose(1, 2);
            k = k.transpose(1, 2);
            v = v.reshape(b, t, _kvHeads, _headDim).transpose(1, 2);
            if (!fullRotary) { q = Rope.Apply(q, ctx.Cos, ctx.Sin); k = Rope.Apply(k, ctx.Cos, ctx.Sin); }
            Tensor fused;
            using (ForwardProfiler.Measure("attention scores (kernel)"))
                fused = fullRotary ? CausalAttention.Compute(q, k, v, _scale, ctx.Cos, ctx.Sin) : CausalAttention.Compute(q, k, v, _scale);
            return o_proj.forward(fused.view(b, t, qDim)).MoveToOuterDisposeScope();
        }
        q = q.transpose(1, 2);
        k = k.transpose(1, 2);
        v = v.reshape(b, t, _kvHeads, _headDim).transpose(1, 2);
        q = Rope.Apply(q, ctx.Cos, ctx.Sin);
        k = Rope.Apply(k, ctx.Cos, ctx.Sin);
        if (ctx.Cache is { } cache)
        {
            (k, v, long start) = cache.Append(layer, k, v, _window);
            // The mask spans every slot; a windowed layer's cache starts later.
            if (mask is not null && start > 0) mask = mask.narrow(-1, start, mask.shape[^1] - start);
        }
        // One new token against a GQA cache: each key/value head's group of query heads (adjacent, as repeat_interleave
        // pairs them) goes in as that head's queries, so the cache is read in place. Repeating it to every head copied
        // B x slots x 2 x heads x head_dim per layer per decode step (186 MiB a layer at bench/serve-vs-plan.sh's load).
        // The one query's mask row [B, 1, 1, S] applies to each query of a group. Not for explicit scores, whose
        // causal mask would take the group for query positions.
        bool grouped = _heads != _kvHeads && t == 1 && !_explicitScores;
        if (grouped) q = q.reshape(b, _kvHeads, _heads / _kvHeads, _headDim);
        else if (_heads != _kvHeads)
        {
            k = k.repeat_interleave(_heads / _kvHeads, 1);
            v = v.repeat_interleave(_heads / _kvHeads, 1);
        }
        Tensor a;
        using (ForwardProfiler.Measure("attention scores (sdpa)"))
            a = _explicitScores ? ExplicitAttention(q, k, v, mask)
                : mask is null ? nn.functional.scaled_dot_product_attention(q, k, v, null, 0.0, t > 1)
                : nn.functional.scaled_dot_product_attention(q, k, v, mask, 0.0, false);
        // Grouped: [B, kvHeads, group, D] is already the heads in order.
        var merged = grouped ? a.reshape(b, t, qDim) : a.transpose(1, 2).reshape(b, t, qDim);
        return o_proj.forward(merged).MoveToOuterDisposeScope();
    }

    /// <summary>Gemma 2's eager attention: scores * scale, tanh soft-cap, mask, softmax in fp32.</summary>
    Tensor ExplicitAttention(Tensor q, Tensor k, Tensor v, Tensor? mask)
    {
        long t = q.shape[2], s = k.shape[2];
        var scores = q.matmul(k.transpose(2, 3)).Times(_scale);
        if (_softcap is { } cap) scores = scores.DividedBy(cap).tanh().Times(cap);
        if (mask is null && t > 1)
            mask = AttentionMask.Build(ones(q.shape[0], s, ScalarType.Int64, q.device), t, s - t, scores.dtype);
        if (mask is not null) scores = scores.Plus(mask);
        var weights = nn.functional.softmax(scores.to_type(ScalarType.Float32), -1).to_type(q.dtype);
        return weights.matmul(v);
    }
}

/// <summary>Gated MLP: down(act(gate(x)) * up(x)); SwiGLU (silu) or Gemma's GeGLU (gelu tanh); Phi-3 fuses gate and up.</summary>
internal sealed class Mlp : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    /// <summary>Null for Phi-3, whose checkpoints hold the fused <see cref="gate_up_proj"/>.</summary>
    public TunableLinear gate_proj = null!, up_proj = null!;
    public TunableLinear down_proj;
    /// <summary>Phi-3 only: rows are the gate, then up.</summary>
    public TunableLinear? gate_up_proj;
#pragma warning restore IDE1006
    readonly bool _geluTanh;
    readonly long _inter;

    public Mlp(string prefix, ModelConfig c, AdapterState state, ScalarType dtype, Func<string, bool> quantized) : base(ModuleNames.Mlp)
    {
        TunableLinear L(string n, long i, long o) => new($"{prefix}.{n}", i, o, false, state, dtype, quantized($"{prefix}.{n}"));
        _inter = c.IntermediateSize;
        _geluTanh = c.HiddenAct == "gelu_pytorch_tanh";
        if (c.FusedProjections) gate_up_proj = L(GateUpProj, c.HiddenSize, 2L * c.IntermediateSize);
        else
        {
            gate_proj = L(GateProj, c.HiddenSize, c.IntermediateSize);
            up_proj = L(UpProj, c.HiddenSize, c.IntermediateSize);
        }
        down_proj = L(DownProj, c.IntermediateSize, c.HiddenSize);
        RegisterComponents();
    }

    /// <summary>The projections in HF module order.</summary>
    public IEnumerable<TunableLinear> Projections() =>
        gate_up_proj is not null ? [gate_up_proj, down_proj] : [gate_proj, up_proj, down_proj];

    public override Tensor forward(Tensor x)
    {
        using var profile = ForwardProfiler.Measure("mlp activation * up");
        using var scope = NewDisposeScope();
        Tensor gate, up, h;
        if (gate_up_proj is not null)
        {
            var gu = gate_up_proj.forward(x);
            if (SwiGlu.Applies(gu)) return down_proj.forward(SwiGlu.ComputeFused(gu, _geluTanh)).MoveToOuterDisposeScope();
            gate = gu.narrow(-1, 0, _inter); up = gu.narrow(-1, _inter, _inter);
        }
        else { gate = gate_proj.forward(x); up = up_proj.forward(x); }
        // CPU fp32 or bf16 with AVX-512F or AVX2 + FMA: one fused pass each way (Kernels/SwiGlu) instead of the activation's and the product's.
        h = SwiGlu.Applies(gate) ? SwiGlu.Compute(gate, up, _geluTanh) : Activate(gate) * up;
        return down_proj.forward(h).MoveToOuterDisposeScope();
    }

    Tensor Activate(Tensor g)
    {
        if (!_geluTanh) return nn.functional.silu(g);
        // PyTorch's gelu(approximate="tanh"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        var cube = ScalarArgs.With(3L, three => g.pow(three));
        return g.Times(0.5) * g.Plus(cube.Times(0.044715)).Times(Math.Sqrt(2 / Math.PI)).tanh().Plus(1L);
    }
}
