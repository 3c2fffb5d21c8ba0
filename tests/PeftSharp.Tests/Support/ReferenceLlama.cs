using System.Buffers.Binary;
using PeftSharp.IO;
using PeftSharp.Models;

namespace PeftSharp.Tests.Support;

/// <summary>
/// An independent float64 Llama/Qwen2 forward written with plain loops: it shares no code with the engine's
/// forward (only the config parser and the safetensors header reader), so agreement means the engine is right.
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
        var inv = Rope.InverseFrequencies(hd, _c.RopeTheta, _c.RopeScaling);
        for (int l = 0; l < _c.NumLayers; l++)
        {
            string pre = $"model.layers.{l}";
            var hn = RmsNorm(x, $"{pre}.input_layernorm.weight", t, h);
            var q = Linear(hn, $"{pre}.self_attn.q_proj", t);
            var k = Linear(hn, $"{pre}.self_attn.k_proj", t);
            var vv = Linear(hn, $"{pre}.self_attn.v_proj", t);
            RotateInPlace(q, t, nh, hd, inv);
            RotateInPlace(k, t, nkv, hd, inv);
            var attn = new double[t * nh * hd];
            for (int head = 0; head < nh; head++)
            {
                int kvh = head / (nh / nkv);
                for (int i = 0; i < t; i++)
                {
                    var s = new double[i + 1];
                    double max = double.NegativeInfinity;
                    for (int j = 0; j <= i; j++)
                    {
                        double d = 0;
                        for (int e = 0; e < hd; e++) d += q[(i * nh + head) * hd + e] * k[(j * nkv + kvh) * hd + e];
                        s[j] = d / Math.Sqrt(hd);
                        max = Math.Max(max, s[j]);
                    }
                    double z = 0;
                    for (int j = 0; j <= i; j++) z += s[j] = Math.Exp(s[j] - max);
                    for (int j = 0; j <= i; j++)
                        for (int e = 0; e < hd; e++) attn[(i * nh + head) * hd + e] += s[j] / z * vv[(j * nkv + kvh) * hd + e];
                }
            }
            var o = Linear(attn, $"{pre}.self_attn.o_proj", t);
            for (int i = 0; i < x.Length; i++) x[i] += o[i];
            var hn2 = RmsNorm(x, $"{pre}.post_attention_layernorm.weight", t, h);
            var g = Linear(hn2, $"{pre}.mlp.gate_proj", t);
            var u = Linear(hn2, $"{pre}.mlp.up_proj", t);
            for (int i = 0; i < g.Length; i++) g[i] = g[i] / (1 + Math.Exp(-g[i])) * u[i];
            var d2 = Linear(g, $"{pre}.mlp.down_proj", t);
            for (int i = 0; i < x.Length; i++) x[i] += d2[i];
        }
        var fin = RmsNorm(x, "model.norm.weight", t, h);
        string head2 = _c.TieWordEmbeddings ? "model.embed_tokens" : "lm_head";
        var logits = Linear(fin, head2, t);
        var r = new double[t, v];
        for (int i = 0; i < t; i++) for (int j = 0; j < v; j++) r[i, j] = logits[i * v + j];
        return r;
    }

    static void RotateInPlace(double[] a, int t, int heads, int hd, double[] inv)
    {
        int half = hd / 2;
        for (int p = 0; p < t; p++)
            for (int hh = 0; hh < heads; hh++)
            {
                int b = (p * heads + hh) * hd;
                for (int i = 0; i < half; i++)
                {
                    double ang = p * inv[i], c = Math.Cos(ang), s = Math.Sin(ang);
                    double x1 = a[b + i], x2 = a[b + i + half];
                    a[b + i] = x1 * c - x2 * s;
                    a[b + i + half] = x2 * c + x1 * s;
                }
            }
    }
}
