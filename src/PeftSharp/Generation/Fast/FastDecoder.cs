using System.Runtime.InteropServices;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Generation.Fast;

/// <summary>
/// One token's decoder step for batch 1, written in C# over the model's own weight memory: RMSNorm, q/k/v, RoPE,
/// attention over a KV cache held here, o, SwiGLU MLP, residuals, final norm and lm_head, into preallocated buffers.
/// Why not libtorch: at batch 1 a step is a chain of matrix-vector products, which libtorch runs on one thread, plus
/// ~15 small ops per layer whose dispatch (microseconds each) is most of a tiny model's step. Here the products are
/// split over <see cref="DecodeWorkers"/> and the small ops are loops. Prefill stays on libtorch; its KV cache is
/// copied in once (<see cref="LoadCache"/>). <see cref="FastDecodeEligibility"/> says which models this covers.
/// </summary>
internal sealed unsafe class FastDecoder : IDisposable
{
    readonly struct Lin(TunableLinear? l, Tensor? tiedWeight = null)
    {
        public readonly float* W = Ptr(l?.weight ?? tiedWeight), B = Ptr(l?.bias);
        public readonly int Rows = (int)(l?.OutFeatures ?? tiedWeight!.shape[0]), Cols = (int)(l?.InFeatures ?? tiedWeight!.shape[1]);
    }

    sealed class Layer(DecoderLayer l)
    {
        public readonly float* AttnNorm = Ptr(l.input_layernorm.weight), MlpNorm = Ptr(l.post_attention_layernorm.weight);
        public readonly float* QNorm = Ptr(l.self_attn.q_norm?.weight), KNorm = Ptr(l.self_attn.k_norm?.weight);
        // Fused checkpoints (Phi-3) hold q,k,v and gate,up as one weight whose rows are in the order of the split ones.
        public readonly Lin[] Qkv = l.self_attn.qkv_proj is { } f ? [new(f)] : [new(l.self_attn.q_proj), new(l.self_attn.k_proj), new(l.self_attn.v_proj)];
        public readonly Lin O = new(l.self_attn.o_proj);
        public readonly Lin[] GateUp = l.mlp.gate_up_proj is { } g ? [new(g)] : [new(l.mlp.gate_proj), new(l.mlp.up_proj)];
        public readonly Lin Down = new(l.mlp.down_proj);
        public float* K, V;   // [kvHeads, capacity, headDim]
    }

    readonly CausalLM _model;   // owns the weights the pointers read
    readonly DecodeWorkers _pool;
    readonly Gemv _gemv = new();
    readonly AttentionJob _attention;
    readonly Layer[] _layers;
    readonly Lin _head;
    readonly float* _embed, _finalNorm;
    readonly int _h, _heads, _kvHeads, _hd, _inter, _vocab, _rotary, _qDim, _kvDim;
    readonly float _eps, _scale;
    readonly List<nint> _buffers = [];
    readonly float* _x, _xn, _qkv, _att, _tmp, _gu, _logits, _cos, _sin;
    int _capacity;

    /// <summary>Tokens in the cache: the position of the next token.</summary>
    public int Length { get; private set; }
    public int Threads => _pool.Threads;

    public FastDecoder(CausalLM model, int capacity, int threads)
    {
        var c = model.Config;
        _model = model;
        _pool = DecodeWorkers.ForThreads(Math.Max(1, threads));
        _h = c.HiddenSize; _heads = c.NumHeads; _kvHeads = c.NumKvHeads; _hd = c.HeadDim; _inter = c.IntermediateSize; _vocab = c.VocabSize;
        _rotary = model.Rope.RotaryDim;
        _qDim = _heads * _hd; _kvDim = _kvHeads * _hd;
        _eps = (float)c.RmsNormEps;
        _scale = (float)(c.AttentionScale > 0 ? c.AttentionScale : 1.0 / Math.Sqrt(_hd));
        _layers = model.Layers.Select(l => new Layer(l)).ToArray();
        _embed = Ptr(model.model.embed_tokens.weight);
        _finalNorm = Ptr(model.model.norm.weight);
        _head = model.lm_head is { } head ? new Lin(head) : new Lin(null, model.model.embed_tokens.weight);
        _x = Alloc(_h); _xn = Alloc(_h); _tmp = Alloc(_h);
        _qkv = Alloc(_qDim + 2 * _kvDim); _att = Alloc(_qDim);
        _gu = Alloc(2 * _inter); _logits = Alloc(_vocab);
        _cos = Alloc(_rotary / 2); _sin = Alloc(_rotary / 2);
        _attention = new AttentionJob(this);
        Grow(Math.Max(16, capacity));
    }

    /// <summary>Copies a prefilled libtorch cache in (batch 1, no window dropped: the eligibility check ensures it).</summary>
    public void LoadCache(KvCache cache)
    {
        int len = (int)cache.Length;
        Grow(len + 1);
        for (int l = 0; l < _layers.Length; l++)
        {
            if (cache.StoredSlots(l) != len) throw new InvalidOperationException($"layer {l} holds {cache.StoredSlots(l)} of {len} slots");
            var (k, v) = cache.Stored(l);
            using (k) using (v)
            {
                CopyIn(k, _layers[l].K, len);
                CopyIn(v, _layers[l].V, len);
            }
        }
        Length = len;
    }

    void CopyIn(Tensor t, float* dst, int len)
    {
        using var c = t.contiguous();   // [1, kvHeads, len, headDim]
        var src = MemoryMarshal.Cast<byte, float>(c.bytes);
        for (int g = 0; g < _kvHeads; g++)
            src.Slice(g * len * _hd, len * _hd).CopyTo(new Span<float>(dst + (long)g * _capacity * _hd, len * _hd));
    }

    /// <summary>Runs <paramref name="token"/> at position <see cref="Length"/>; returns its logits (valid until the next step).</summary>
    public ReadOnlySpan<float> Step(int token)
    {
        if ((uint)token >= (uint)_vocab) throw new ArgumentOutOfRangeException(nameof(token), $"token {token} outside the vocabulary of {_vocab}");
        if (Length + 1 > _capacity) Grow(_capacity * 2);
        int pos = Length;
        new ReadOnlySpan<float>(_embed + (long)token * _h, _h).CopyTo(new Span<float>(_x, _h));
        RopeTables(pos);
        foreach (var L in _layers)
        {
            RmsNorm(_x, L.AttnNorm, _xn, _h, _eps);
            float* q = _qkv, k = _qkv + _qDim, v = k + _kvDim;
            MatVec(L.Qkv, _xn, _qkv);
            using (ForwardProfiler.Measure("C# decode: norms, rope, activation, residuals"))
            {
                if (L.QNorm != null)
                {
                    for (int i = 0; i < _heads; i++) RmsNorm(q + i * _hd, L.QNorm, q + i * _hd, _hd, _eps);
                    for (int i = 0; i < _kvHeads; i++) RmsNorm(k + i * _hd, L.KNorm, k + i * _hd, _hd, _eps);
                }
                for (int i = 0; i < _heads; i++) Rotate(q + i * _hd);
                for (int i = 0; i < _kvHeads; i++) Rotate(k + i * _hd);
                for (int g = 0; g < _kvHeads; g++)
                {
                    long slot = ((long)g * _capacity + pos) * _hd;
                    new Span<float>(k + g * _hd, _hd).CopyTo(new Span<float>(L.K + slot, _hd));
                    new Span<float>(v + g * _hd, _hd).CopyTo(new Span<float>(L.V + slot, _hd));
                }
            }
            using (ForwardProfiler.Measure("C# decode: attention over the cache")) _attention.Run(_pool, L, q, pos + 1);
            MatVec(L.O, _att, _tmp);
            Add(_x, _tmp, _h);
            RmsNorm(_x, L.MlpNorm, _xn, _h, _eps);
            MatVec(L.GateUp, _xn, _gu);
            using (ForwardProfiler.Measure("C# decode: norms, rope, activation, residuals"))
                for (int i = 0; i < _inter; i++) { float g = _gu[i]; _gu[i] = g / (1f + MathF.Exp(-g)) * _gu[_inter + i]; }
            MatVec(L.Down, _gu, _tmp);
            Add(_x, _tmp, _h);
        }
        RmsNorm(_x, _finalNorm, _xn, _h, _eps);
        using (ForwardProfiler.Measure("C# decode: lm_head")) _gemv.Run(_pool, _head.W, _head.B, _head.Rows, _head.Cols, _xn, _logits);
        Length = pos + 1;
        return new ReadOnlySpan<float>(_logits, _vocab);
    }

    /// <summary>One or more products whose outputs lie back to back in <paramref name="y"/> (q|k|v, gate|up).</summary>
    void MatVec(Lin[] parts, float* x, float* y)
    {
        foreach (var p in parts) { MatVec(p, x, y); y += p.Rows; }
    }

    void MatVec(in Lin p, float* x, float* y)
    {
        using var _ = ForwardProfiler.Measure("C# decode: matrix-vector products");
        _gemv.Run(_pool, p.W, p.B, p.Rows, p.Cols, x, y);
    }

    /// <summary>HF's LlamaRMSNorm in fp32: x * rsqrt(mean(x^2) + eps) * weight (the sum of squares in double).</summary>
    static void RmsNorm(float* x, float* w, float* y, int n, float eps)
    {
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
        float r = 1f / MathF.Sqrt((float)(ss / n) + eps);
        for (int i = 0; i < n; i++) y[i] = x[i] * r * w[i];
    }

    static void Add(float* x, float* y, int n) { for (int i = 0; i < n; i++) x[i] += y[i]; }

    /// <summary>cos/sin of this position's angles, as Rope.CosSin computes them (angles in double, then fp32).</summary>
    void RopeTables(int pos)
    {
        var inv = _model.Rope.FrequenciesFor(pos);
        double scale = _model.Config.RopeScaling?.AttentionFactor ?? 1.0;
        for (int i = 0; i < _rotary / 2; i++)
        {
            double a = pos * inv[i];
            _cos[i] = (float)(Math.Cos(a) * scale);
            _sin[i] = (float)(Math.Sin(a) * scale);
        }
    }

    /// <summary>rotate_half RoPE on one head's first rotary dims, in place.</summary>
    void Rotate(float* x)
    {
        int half = _rotary / 2;
        for (int i = 0; i < half; i++)
        {
            float x1 = x[i], x2 = x[i + half], c = _cos[i], s = _sin[i];
            x[i] = x1 * c - x2 * s;
            x[i + half] = x2 * c + x1 * s;
        }
    }

    /// <summary>
    /// Softmax attention of each query head over the cached keys of its group (GQA: head i reads kv head
    /// i / (heads / kvHeads), as repeat_interleave lays them out); one chunk per head.
    /// </summary>
    sealed class AttentionJob(FastDecoder d) : ChunkedJob
    {
        /// <summary>Below this many cached floats per step one thread does every head.</summary>
        const long ParallelMinElements = 1 << 15;
        Layer _layer = null!;
        float* _q;
        int _slots;
        float[] _scores = [];

        public void Run(DecodeWorkers pool, Layer layer, float* q, int slots)
        {
            _layer = layer; _q = q; _slots = slots;
            if (_scores.Length < d._heads * slots) _scores = new float[d._heads * Math.Max(slots, d._capacity)];
            Chunks = d._heads;
            if ((long)slots * d._kvDim * 2 < ParallelMinElements) for (int h = 0; h < d._heads; h++) RunChunk(h);
            else pool.Run(this);
        }

        public override void RunChunk(int h)
        {
            int hd = d._hd, group = h / (d._heads / d._kvHeads);
            float* q = _q + h * hd, o = d._att + h * hd;
            float* keys = _layer.K + (long)group * d._capacity * hd, values = _layer.V + (long)group * d._capacity * hd;
            var s = _scores.AsSpan(h * _slots, _slots);
            float max = float.NegativeInfinity;
            for (int j = 0; j < _slots; j++) { s[j] = Gemv.Dot(q, keys + (long)j * hd, hd) * d._scale; max = MathF.Max(max, s[j]); }
            float sum = 0;
            for (int j = 0; j < _slots; j++) { s[j] = MathF.Exp(s[j] - max); sum += s[j]; }
            new Span<float>(o, hd).Clear();
            for (int j = 0; j < _slots; j++) Gemv.Axpy(s[j] / sum, values + (long)j * hd, o, hd);
        }
    }

    /// <summary>Makes room for <paramref name="capacity"/> cached tokens per layer, keeping the cached ones.</summary>
    void Grow(int capacity)
    {
        if (capacity <= _capacity) return;
        foreach (var L in _layers)
        {
            L.K = Regrow(L.K, capacity);
            L.V = Regrow(L.V, capacity);
        }
        _capacity = capacity;
    }

    float* Regrow(float* old, int capacity)
    {
        float* fresh = Alloc((long)_kvHeads * capacity * _hd);
        if (old != null)
        {
            for (int g = 0; g < _kvHeads; g++)
                new Span<float>(old + (long)g * _capacity * _hd, Length * _hd).CopyTo(new Span<float>(fresh + (long)g * capacity * _hd, Length * _hd));
            _buffers.Remove((nint)old);
            NativeMemory.AlignedFree(old);
        }
        return fresh;
    }

    float* Alloc(long floats)
    {
        var p = (float*)NativeMemory.AlignedAlloc((nuint)(Math.Max(1, floats) * sizeof(float)), 64);
        _buffers.Add((nint)p);
        return p;
    }

    static float* Ptr(Tensor? t) => t is null ? null : Kernels.KernelSupport.Ptr<float>(t);

    public void Dispose()
    {
        foreach (var p in _buffers) NativeMemory.AlignedFree((void*)p);
        _buffers.Clear();
        GC.KeepAlive(_model);
    }
}
