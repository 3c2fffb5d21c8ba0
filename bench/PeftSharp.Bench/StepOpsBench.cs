using System.Diagnostics;
using System.Text.Json;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// step-ops: forward + backward time of the LoRA step's non-matmul sub-layers at lora-step's shapes, the engine's
/// fused autograd nodes against the plain autograd graphs they replace (the code before issue 17), alternated
/// per repetition (so load drift hits both), with the calls per step and the time that saves per step. Also SDPA's
/// fused CPU kernel against the explicit matmul + softmax attention, to see whether attention's backward pays.
/// </summary>
public sealed class StepOpsBench : IBench
{
    public string Name => "step-ops";
    public string Description => "fwd+bwd of rmsnorm / rope / attention at lora-step's shapes: fused autograd nodes vs the plain graphs, alternated (--batch --seq --hidden --heads --layers --reps --threads)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int batch = a.Int("batch", 4), seq = a.Int("seq", 256), hidden = a.Int("hidden", 512), heads = a.Int("heads", 8);
        int layers = a.Int("layers", 4), reps = a.Int("reps", 15), threads = a.Int("threads", 0);
        if (threads > 0) set_num_threads(threads);
        int hd = hidden / heads;
        manual_seed(0);
        var c = new ModelConfig { Shape = new PeftSharp.Memory.ModelConfig { ModelType = "llama", HiddenSize = hidden, IntermediateSize = 2 * hidden, NumHiddenLayers = 1, NumAttentionHeads = heads, NumKeyValueHeads = heads, HeadDim = hd, VocabSize = 32 } };
        var (cos, sin) = new Rope(c).CosSin(arange(0, seq, ScalarType.Int64).unsqueeze(0), ScalarType.Float32);
        using var norm = new RmsNorm("norm", hidden, 1e-6, ScalarType.Float32);
        var x = randn(batch, seq, hidden);
        var g = randn(batch, seq, hidden);
        var gh = randn(batch, heads, seq, hd);
        // The gradient attention's backward hands RoPE has q's layout: contiguous after the plain RoPE, [B, T, H, D]
        // behind the view after the fused one (which keeps the projection's layout).
        var ghProjLayout = randn(batch, seq, heads, hd).transpose(1, 2);
        var q = randn(batch, heads, seq, hd);
        var k = randn(batch, heads, seq, hd);
        var v = randn(batch, heads, seq, hd);
        var causal = ones(seq, seq, ScalarType.Bool).triu(1);

        // Each case: (name, calls per step, plain, fused); a run is one forward + backward on a fresh leaf.
        var cases = new (string Name, int PerStep, Action Plain, Action Fused)[]
        {
            ("rmsnorm [B,T,H]", 2 * layers + 1,
                () => Backward(PlainRmsNorm(Leaf(x), norm.weight, 1e-6), g),
                () => Backward(norm.forward(Leaf(x)), g)),
            ("rope q|k from the projection layout (+ transpose, reshape)", 2 * layers,
                () => Backward(PlainRope(Leaf(x).view(batch, seq, heads, hd).transpose(1, 2), cos, sin), gh),
                () => Backward(Rope.Apply(Leaf(x).view(batch, seq, heads, hd).transpose(1, 2), cos, sin), ghProjLayout)),
            ("attention: explicit matmul+softmax (plain) vs sdpa kernel (fused)", layers,
                () => Backward(ExplicitCausal(Leaf(q), Leaf(k), Leaf(v), causal), gh),
                () => Backward(nn.functional.scaled_dot_product_attention(Leaf(q), Leaf(k), Leaf(v), is_casual: true), gh)),
        };
        foreach (var cs in cases) { cs.Plain(); cs.Fused(); }   // warm up both
        var rows = new List<object>();
        foreach (var cs in cases)
        {
            var plain = new List<double>();
            var fused = new List<double>();
            for (int r = 0; r < reps; r++)
            {
                if (r % 2 == 0) { plain.Add(Time(cs.Plain)); fused.Add(Time(cs.Fused)); }
                else { fused.Add(Time(cs.Fused)); plain.Add(Time(cs.Plain)); }
            }
            double p = BenchStats.Median(plain) * 1e3, f = BenchStats.Median(fused) * 1e3;
            var ratios = plain.Zip(fused, (x1, y1) => x1 / y1);
            rows.Add(new
            {
                op = cs.Name, calls_per_step = cs.PerStep, plain_ms = Math.Round(p, 3), fused_ms = Math.Round(f, 3),
                plain_over_fused = Math.Round(BenchStats.Median(ratios), 3), saved_ms_per_step = Math.Round((p - f) * cs.PerStep, 2),
            });
        }
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            bench = "step-ops", threads = get_num_threads(), shape = $"batch {batch} x seq {seq}, hidden {hidden}, heads {heads}, layers {layers}",
            reps, load = File.ReadAllText("/proc/loadavg").Split(' ')[0], ops = rows,
        }));
        return 0;
    }

    static Tensor Leaf(Tensor t) => t.detach().requires_grad_(true);

    static void Backward(Tensor y, Tensor g)
    {
        y.backward([g]);
    }

    static double Time(Action run)
    {
        using var scope = NewDisposeScope();
        var sw = Stopwatch.StartNew();
        run();
        return sw.Elapsed.TotalSeconds;
    }

    /// <summary>RmsNorm.forward before issue 17: plain autograd ops.</summary>
    static Tensor PlainRmsNorm(Tensor x, Tensor weight, double eps) => (x * (x.pow(2).mean([-1L], keepdim: true) + eps).rsqrt()).mul_(weight);

    /// <summary>Rope.Apply before issue 17: two products with in-place multiply-adds and a cat, through autograd.</summary>
    static Tensor PlainRope(Tensor x, Tensor cos, Tensor sin)
    {
        long half = cos.shape[^1] / 2;
        Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
        var first = (x1 * cos.narrow(-1, 0, half)).addcmul_(x2, sin.narrow(-1, 0, half), -1);
        var second = (x2 * cos.narrow(-1, half, half)).addcmul_(x1, sin.narrow(-1, half, half), 1);
        return cat([first, second], -1);
    }

    static Tensor ExplicitCausal(Tensor q, Tensor k, Tensor v, Tensor causal)
    {
        var scores = q.matmul(k.transpose(2, 3)).mul_(1.0 / Math.Sqrt(q.shape[^1])).masked_fill_(causal, float.NegativeInfinity);
        return nn.functional.softmax(scores, -1).matmul(v);
    }
}
