using System.Diagnostics;
using PeftSharp.Kernels;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// Scratch comparison of the LoRA step's projection GEMMs in its shapes (issue #17's levers), alternated round by
/// round, fwd+bwd of every layer: q/k/v and gate/up as separate Linears vs one Linear over their stacked weights; the
/// LoRA rank-r products of q and v as the model runs them vs the same raw products split over the OpenMP team.
/// </summary>
public sealed class GemmShapesBench : IBench
{
    public string Name => "gemm-shapes";
    public string Description => "step-shape projection GEMMs: separate vs fused q/k/v and gate/up, LoRA products 1 vs 2 threads (--rounds 7 --threads 2)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int rounds = a.Int("rounds", 7), threads = a.Int("threads", 2), layers = 4, r = 8;
        long n = 1024, h = 512, inter = 1344;
        set_num_threads(threads);
        Console.WriteLine($"cpu: {BenchCpu.Describe()}; torch threads {get_num_threads()}");
        manual_seed(1);
        Tensor W(long o, long i) => randn(o, i) * 0.02;
        var wq = Enumerable.Range(0, layers).Select(_ => new[] { W(h, h), W(h, h), W(h, h) }).ToArray();
        var wqkv = wq.Select(ws => cat(ws, 0)).ToArray();
        var wgu = Enumerable.Range(0, layers).Select(_ => new[] { W(inter, h), W(inter, h) }).ToArray();
        var wgu1 = wgu.Select(ws => cat(ws, 0)).ToArray();
        var aq = Enumerable.Range(0, 2 * layers).Select(_ => W(r, h)).ToArray();
        var bq = Enumerable.Range(0, 2 * layers).Select(_ => W(h, r)).ToArray();
        var x0 = randn(n, h);
        var g512 = randn(n, h);
        var g1344 = randn(n, inter);
        var g2688 = randn(n, 2 * inter);

        void AttnSep(int l, Tensor x)
        {
            var outs = wq[l].Select(w => nn.functional.linear(x, w)).ToList();
            autograd.backward(outs, [g512, g512, g512]);
        }
        void AttnFused(int l, Tensor x)
        {
            var qkv = nn.functional.linear(x, wqkv[l]);
            var parts = qkv.split([h, h, h], -1);
            autograd.backward(parts, [g512, g512, g512]);
        }
        var g1536 = randn(n, 3 * h);
        void AttnFusedOne(int l, Tensor x)
        {
            var qkv = nn.functional.linear(x, wqkv[l]);
            autograd.backward([qkv], [g1536]);
        }
        void MlpSep(int l, Tensor x)
        {
            var outs = wgu[l].Select(w => nn.functional.linear(x, w)).ToList();
            autograd.backward(outs, [g1344, g1344]);
        }
        void MlpFused(int l, Tensor x)
        {
            var gu = nn.functional.linear(x, wgu1[l]);
            autograd.backward([gu], [g2688]);
        }
        // LoRA on q and v as LoraLayer.AddScaledLora runs it: base + (x A^T * s) B^T as one addmm.
        void LoraNow(int l, Tensor x)
        {
            var outs = new List<Tensor>();
            for (int j = 0; j < 2; j++)
            {
                var A = aq[2 * l + j].requires_grad_(true); var B = bq[2 * l + j].requires_grad_(true);
                var bo = nn.functional.linear(x, wq[l][2 * j]);
                var down = nn.functional.linear(x, A) * 2.0;
                outs.Add(addmm(bo, down, B.t(), 1, 1));
            }
            autograd.backward(outs, [g512, g512]);
        }
        // The same six products per module (fwd: xA, down B^T; bwd: g B, dB, dA, dx), raw, no autograd.
        void LoraRaw(int l, Tensor x, long lo, long rows)
        {
            var xs = x.narrow(0, lo, rows); var gs = g512.narrow(0, lo, rows);
            for (int j = 0; j < 2; j++)
            {
                var A = aq[2 * l + j]; var B = bq[2 * l + j];
                using var s = NewDisposeScope();
                var down = nn.functional.linear(xs, A) * 2.0;
                var y = addmm(gs, down, B.t(), 1, 1);
                var dd = gs.mm(B) * 2.0;
                var dB = gs.t().mm(down);
                var dA = dd.t().mm(xs);
                var dx = dd.mm(A);
            }
        }
        void LoraRaw1(int l, Tensor x) { using var ng = no_grad(); LoraRaw(l, x, 0, n); }
        void LoraRaw2(int l, Tensor x)
        {
            using var ng = no_grad();
            TorchThreads.For(2, 2, i => LoraRaw(l, x, i * n / 2, n / 2));
        }

        // Base linear + LoRA of q and v, forward and backward products only (as one fused LoRA autograd node would run them; measured and not kept), raw: on all rows
        // with MKL's threads, or each of the team's threads on its half of the rows with a sequential MKL.
        void BaseLoraRaw(int l, Tensor x, long lo, long rows)
        {
            var xs = x.narrow(0, lo, rows); var gs = g512.narrow(0, lo, rows);
            for (int j = 0; j < 2; j++)
            {
                var W = wq[l][2 * j]; var A = aq[2 * l + j]; var B = bq[2 * l + j];
                using var s = NewDisposeScope();
                var y = nn.functional.linear(xs, W);
                var d = nn.functional.linear(xs, A).mul_(2.0);
                y.addmm_(d, B.t(), 1, 1);
                var dx = gs.mm(W);
                var dd = gs.mm(B).mul_(2.0);
                dx.addmm_(dd, A, 1, 1);
                var dB = gs.t().mm(d);
                var dA = dd.t().mm(xs);
            }
        }
        void BaseLoraAll(int l, Tensor x) { using var ng = no_grad(); BaseLoraRaw(l, x, 0, n); }
        void BaseLoraHalves(int l, Tensor x)
        {
            using var ng = no_grad();
            TorchThreads.For(2, 2, i => BaseLoraRaw(l, x, i * n / 2, n / 2));
        }
        // Every frozen Linear of a layer (q, k, v, o, gate, up, down): forward x W^T and backward g W, raw.
        var wDown = Enumerable.Range(0, layers).Select(_ => W(h, inter)).ToArray();
        var x1344 = randn(n, inter);
        void Frozen(int l, long lo, long rows)
        {
            var xs = x0.narrow(0, lo, rows); var xi = x1344.narrow(0, lo, rows);
            var g5 = g512.narrow(0, lo, rows); var g13 = g1344.narrow(0, lo, rows);
            using var s = NewDisposeScope();
            foreach (var w in wq[l].Append(wq[l][0]))
            {
                nn.functional.linear(xs, w); g5.mm(w);
            }
            foreach (var w in wgu[l]) { nn.functional.linear(xs, w); g13.mm(w); }
            nn.functional.linear(xi, wDown[l]); g5.mm(wDown[l]);
        }
        void FrozenAll(int l, Tensor x) { using var ng = no_grad(); Frozen(l, 0, n); }
        void FrozenHalves(int l, Tensor x) { using var ng = no_grad(); TorchThreads.For(2, 2, i => Frozen(l, i * n / 2, n / 2)); }
        var sides = new (string Name, Action<int, Tensor> F)[]
        {
            ("q/k/v separate", AttnSep), ("qkv fused+split", AttnFused), ("qkv fused, one grad", AttnFusedOne),
            ("gate/up separate", MlpSep), ("gate_up fused", MlpFused),
            ("q,v base+lora chain", LoraNow), ("q,v base+lora raw, MKL threads", BaseLoraAll), ("q,v base+lora raw, row halves", BaseLoraHalves), ("frozen linears, MKL threads", FrozenAll), ("frozen linears, row halves", FrozenHalves), ("lora raw 1 thread", LoraRaw1), ("lora raw 2 threads", LoraRaw2),
        };
        var times = sides.Select(_ => new List<double>()).ToList();
        for (int round = -2; round < rounds; round++)
            for (int s = 0; s < sides.Length; s++)
            {
                var sw = Stopwatch.StartNew();
                for (int l = 0; l < layers; l++)
                {
                    using var scope = NewDisposeScope();
                    var x = x0.detach().requires_grad_(true);
                    sides[s].F(l, x);
                }
                if (round >= 0) times[s].Add(sw.Elapsed.TotalMilliseconds);
            }
        for (int s = 0; s < sides.Length; s++)
            Console.WriteLine($"{sides[s].Name,-26} {BenchStats.Median(times[s]),8:F2} ms per {layers} layers (fwd+bwd)  per round: {string.Join(", ", times[s].Select(t => t.ToString("F2")))}");
        return 0;
    }
}
