using System.Buffers.Binary;
using PeftSharp.IO;
using PeftSharp.Models;

namespace PeftSharp.Tests.Support;

/// <summary>
/// An independent float64 Llama/Mistral/Qwen2/Qwen3/Phi-3/Gemma 2 forward written with plain loops: it shares no
/// code with the engine's forward (only the config parser and the safetensors header reader), so agreement means
/// the engine is right. Written from transformers' modeling_*.py: sliding windows (a query at i sees keys j with
/// i - j &lt; window), Qwen3's per-head q/k norms, Phi-3's fused projections, partial rotary and longrope, and
/// Gemma 2's (1 + w) norms, scaled embeddings, sandwich norms, GeGLU, score scale and soft-capping.
/// </summary>
public sealed class ReferenceLlama
{
    readonly ModelConfig _c;
    readonly Dictionary<string, (double[] Data, long[] Shape)> _w = new();

    public ReferenceLlama(string folder)
    {
        _c = ModelConfig.Load(folder);
        using var reader = new CheckpointReader(folder);
        foreach (var name in reader.Names)
        {
            var f = reader.FileOf(name);
            var info = f.Info(name);
            _w[name] = (Decode(f.RawBytes(name), info.Dtype), info.Shape);
        }
    }

    /// <summary>Applies a dense weight delta (e.g. a merged adapter) before computing.</summary>
    public void Override(string name, double[] data) => _w[name] = (data, _w[name].Shape);
    public double[] Weight(string name) => _w[name].Data;

    static double[] Decode(ReadOnlySpan<byte> b, string dtype)
    {
        int n = b.Length / SafeTensorDtype.ElementSize(dtype);
        var r = new double[n];
        for (int i = 0; i < n; i++)
            r[i] = dtype switch
            {
                "F32" => BinaryPrimitives.ReadSingleLittleEndian(b[(4 * i)..]),
                "F16" => (double)BinaryPrimitives.ReadHalfLittleEndian(b[(2 * i)..]),
                "BF16" => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(b[(2 * i)..]) << 16),
                _ => throw new NotSupportedException(dtype),
            };
        return r;
    }

    double[] Linear(double[] x, string name, int rows)
    {
        var (w, shape) = _w[name + ".weight"];
        int o = (int)shape[0], i = (int)shape[1];
        var bias = _w.TryGetValue(name + ".bias", out var b) ? b.Data : null;
        var y = new double[rows * o];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < o; j++)
            {
                double s = bias?[j] ?? 0;
                for (int k = 0; k < i; k++) s += x[r * i + k] * w[j * i + k];
                y[r * o + j] = s;
            }
        return y;
    }

    double[] RmsNorm(double[] x, string name, int rows, int dim)
    {
        var w = _w[name].Data;
        if (_c.GemmaBlock) w = w.Select(e => 1 + e).ToArray();
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double ms = 0;
            for (int k = 0; k < dim; k++) ms += x[r * dim + k] * x[r * dim + k];
            double inv = 1 / Math.Sqrt(ms / dim + _c.RmsNormEps);
            for (int k = 0; k < dim; k++) y[r * dim + k] = x[r * dim + k] * inv * w[k];
        }
        return y;
    }

    /// <summary>Logits [T, V] for one sequence.</summary>
    public double[,] Forward(int[] ids)
    {
        int t = ids.Length, h = _c.HiddenSize, hd = _c.HeadDim, nh = _c.NumHeads, nkv = _c.NumKvHeads, v = _c.VocabSize;
        var emb = _w["model.embed_tokens.weight"].Data;
        var x = new double[t * h];
        for (int p = 0; p < t; p++) Array.Copy(emb, (long)ids[p] * h, x, p * h, h);
        if (_c.GemmaBlock) for (int i = 0; i < x.Length; i++) x[i] *= Math.Sqrt(h);
        var (inv, ropeScale) = Frequencies(t);
        double scale = _c.GemmaBlock ? _c.AttentionScale : 1 / Math.Sqrt(hd);   // Gemma 2: query_pre_attn_scalar^-0.5
        double? softcap = _c.AttnLogitSoftcapping;
        for (int l = 0; l < _c.NumLayers; l++)
        {
            string pre = $"model.layers.{l}";
            int window = _c.WindowOf(l) ?? int.MaxValue;
            var hn = RmsNorm(x, $"{pre}.input_layernorm.weight", t, h);
            double[] q, k, vv;
            if (_c.FusedProjections)
            {
                var qkv = Linear(hn, $"{pre}.self_attn.qkv_proj", t);
                int qd = nh * hd, kd = nkv * hd, all = qd + 2 * kd;
                q = new double[t * qd]; k = new double[t * kd]; vv = new double[t * kd];
                for (int p = 0; p < t; p++)
                {
                    Array.Copy(qkv, p * all, q, p * qd, qd);
                    Array.Copy(qkv, p * all + qd, k, p * kd, kd);
                    Array.Copy(qkv, p * all + qd + kd, vv, p * kd, kd);
                }
            }
            else
            {
                q = Linear(hn, $"{pre}.self_attn.q_proj", t);
                k = Linear(hn, $"{pre}.self_attn.k_proj", t);
                vv = Linear(hn, $"{pre}.self_attn.v_proj", t);
            }
            if (_c.QkNorm)
            {
                q = RmsNorm(q, $"{pre}.self_attn.q_norm.weight", t * nh, hd);
                k = RmsNorm(k, $"{pre}.self_attn.k_norm.weight", t * nkv, hd);
            }
            RotateInPlace(q, t, nh, hd, inv, ropeScale);
            RotateInPlace(k, t, nkv, hd, inv, ropeScale);
            var attn = new double[t * nh * hd];
            for (int head = 0; head < nh; head++)
            {
                int kvh = head / (nh / nkv);
                for (int i = 0; i < t; i++)
                {
                    int first = Math.Max(0, i - window + 1);
                    var s = new double[i + 1];
                    double max = double.NegativeInfinity;
                    for (int j = first; j <= i; j++)
                    {
                        double d = 0;
                        for (int e = 0; e < hd; e++) d += q[(i * nh + head) * hd + e] * k[(j * nkv + kvh) * hd + e];
                        s[j] = d * scale;
                        if (softcap is { } cap) s[j] = Math.Tanh(s[j] / cap) * cap;
                        max = Math.Max(max, s[j]);
                    }
                    double z = 0;
                    for (int j = first; j <= i; j++) z += s[j] = Math.Exp(s[j] - max);
                    for (int j = first; j <= i; j++)
                        for (int e = 0; e < hd; e++) attn[(i * nh + head) * hd + e] += s[j] / z * vv[(j * nkv + kvh) * hd + e];
                }
            }
            var o = Linear(attn, $"{pre}.self_attn.o_proj", t);
            if (_c.GemmaBlock) o = RmsNorm(o, $"{pre}.post_attention_layernorm.weight", t, h);
            for (int i = 0; i < x.Length; i++) x[i] += o[i];
            var hn2 = RmsNorm(x, _c.GemmaBlock ? $"{pre}.pre_feedforward_layernorm.weight" : $"{pre}.post_attention_layernorm.weight", t, h);
            double[] g, u;
            if (_c.FusedProjections)
            {
                var gu = Linear(hn2, $"{pre}.mlp.gate_up_proj", t);
                int m = _c.IntermediateSize;
                g = new double[t * m]; u = new double[t * m];
                for (int p = 0; p < t; p++) { Array.Copy(gu, p * 2 * m, g, p * m, m); Array.Copy(gu, p * 2 * m + m, u, p * m, m); }
            }
            else
            {
                g = Linear(hn2, $"{pre}.mlp.gate_proj", t);
                u = Linear(hn2, $"{pre}.mlp.up_proj", t);
            }
            for (int i = 0; i < g.Length; i++)
                g[i] = (_c.HiddenAct == "gelu_pytorch_tanh"
                    ? 0.5 * g[i] * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (g[i] + 0.044715 * g[i] * g[i] * g[i])))
                    : g[i] / (1 + Math.Exp(-g[i]))) * u[i];
            var d2 = Linear(g, $"{pre}.mlp.down_proj", t);
            if (_c.GemmaBlock) d2 = RmsNorm(d2, $"{pre}.post_feedforward_layernorm.weight", t, h);
            for (int i = 0; i < x.Length; i++) x[i] += d2[i];
        }
        var fin = RmsNorm(x, "model.norm.weight", t, h);
        string head2 = _c.TieWordEmbeddings ? "model.embed_tokens" : "lm_head";
        var logits = Linear(fin, head2, t);
        if (_c.FinalLogitSoftcapping is { } fcap) for (int i = 0; i < logits.Length; i++) logits[i] = Math.Tanh(logits[i] / fcap) * fcap;
        var r = new double[t, v];
        for (int i = 0; i < t; i++) for (int j = 0; j < v; j++) r[i, j] = logits[i * v + j];
        return r;
    }

    /// <summary>
    /// Inverse frequencies over the rotary dims and the cos/sin factor. Longrope is written out here from
    /// modeling_rope_utils: short factors unless the sequence is longer than original_max_position_embeddings.
    /// </summary>
    (double[] Inv, double Scale) Frequencies(int t)
    {
        int rd = _c.RotaryDim;
        if (_c.RopeScaling is { Type: "longrope" } lr)
        {
            var ext = t > lr.OriginalMaxPositionEmbeddings ? lr.LongFactor! : lr.ShortFactor!;
            var inv = new double[rd / 2];
            for (int i = 0; i < inv.Length; i++) inv[i] = 1.0 / (ext[i] * Math.Pow(_c.RopeTheta, 2.0 * i / rd));
            return (inv, lr.AttentionFactor);
        }
        return (Rope.InverseFrequencies(rd, _c.RopeTheta, _c.RopeScaling), 1.0);
    }

    /// <summary>Rotates the first 2 * inv.Length dims of each head ("rotate_half" pairs); the rest pass through.</summary>
    static void RotateInPlace(double[] a, int t, int heads, int hd, double[] inv, double scale)
    {
        int half = inv.Length;
        for (int p = 0; p < t; p++)
            for (int hh = 0; hh < heads; hh++)
            {
                int b = (p * heads + hh) * hd;
                for (int i = 0; i < half; i++)
                {
                    double ang = p * inv[i], c = Math.Cos(ang) * scale, s = Math.Sin(ang) * scale;
                    double x1 = a[b + i], x2 = a[b + i + half];
                    a[b + i] = x1 * c - x2 * s;
                    a[b + i + half] = x2 * c + x1 * s;
                }
            }
    }
}
