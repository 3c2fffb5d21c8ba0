using System.Diagnostics;
using PeftSharp.Kernels;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// Causal self-attention forward and backward at a training shape: the fused C# kernel (<see cref="CausalAttention"/>)
/// against libtorch's SDPA (is_causal) as the model called it before, alternated round by round. Both take q/k/v the way
/// the model hands them over ([B, H, T, D] views of the projections' [B, T, H, D] output, not yet rotated) and give
/// o_proj's input [B, T, H*D]: SDPA's side is the model's previous path (Rope.Apply on q and k, GQA's repeat_interleave
/// of k/v, SDPA, the transpose copy), the kernel's applies the rotary embedding itself.
/// </summary>
public sealed class AttentionBench : IBench
{
    public string Name => "attention";
    public string Description => "fused causal attention kernel (rotary inside) vs Rope.Apply + SDPA, fwd and bwd ms (--batch 4 --heads 8 --kv-heads 8 --seq 256 --head-dim 64 --rounds 7 --threads 2 --dtype fp32|bf16)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int b = a.Int("batch", 4), heads = a.Int("heads", 8), kvHeads = a.Int("kv-heads", 8), t = a.Int("seq", 256), d = a.Int("head-dim", 64);
        int rounds = a.Int("rounds", 7), threads = a.Int("threads", 2);
        // bf16: q/k/v, cos/sin and dout in bf16 as `--compute-dtype bf16` hands them over; SDPA's side then runs in bf16.
        var dtype = a.Get("dtype", "fp32") switch
        {
            "fp32" => ScalarType.Float32,
            "bf16" => ScalarType.BFloat16,
            var other => throw new ArgumentException($"--dtype: {other} is not fp32 or bf16"),
        };
        if (threads > 0) set_num_threads(threads);
        Console.WriteLine($"cpu: {BenchCpu.Describe()}; torch threads {get_num_threads()}");
        if (!CausalAttentionKernel.Supports(d)) { Console.WriteLine("the kernel needs AVX-512F and head_dim % 32 == 0: nothing to compare"); return 0; }
        manual_seed(1);
        using var q = randn(b, t, heads, d).to_type(dtype).transpose(1, 2).requires_grad_(true);
        using var k = randn(b, t, kvHeads, d).to_type(dtype).transpose(1, 2).requires_grad_(true);
        using var v = randn(b, t, kvHeads, d).to_type(dtype).transpose(1, 2).requires_grad_(true);
        using var dOut = randn(b, t, (long)heads * d).to_type(dtype);
        double scale = 1 / Math.Sqrt(d);
        var rope = new PeftSharp.Models.Rope(new PeftSharp.Models.ModelConfig { Shape = new PeftSharp.Memory.ModelConfig { ModelType = "llama", HiddenSize = heads * d, IntermediateSize = 4 * d, NumHiddenLayers = 1, NumAttentionHeads = heads, NumKeyValueHeads = kvHeads, HeadDim = d, VocabSize = 32 } });
        var (cos, sin) = rope.CosSin(arange(0, t, ScalarType.Int64).unsqueeze(0).expand(b, t), dtype);
        Tensor Sdpa()
        {
            Tensor kk = PeftSharp.Models.Rope.Apply(k, cos, sin), vv = v;
            var qq = PeftSharp.Models.Rope.Apply(q, cos, sin);
            if (heads != kvHeads) { kk = kk.repeat_interleave(heads / kvHeads, 1); vv = v.repeat_interleave(heads / kvHeads, 1); }
            return nn.functional.scaled_dot_product_attention(qq, kk, vv, null, 0.0, true).transpose(1, 2).reshape(b, t, (long)heads * d);
        }
        Tensor Kernel() => CausalAttention.Compute(q, k, v, scale, cos, sin).view(b, t, (long)heads * d);
        var sides = new (string Name, Func<Tensor> Forward)[] { ("rope + sdpa", Sdpa), ("fused kernel", Kernel) };
        // --only kernel|sdpa times one side alone (no libtorch parallel region right before the kernel's: see README).
        string only = a.Get("only", "");
        if (only != "") sides = sides.Where(x => x.Name.StartsWith(only == "kernel" ? "fused" : "sdpa")).ToArray();
        var fwd = sides.Select(_ => new List<double>()).ToList();
        var bwd = sides.Select(_ => new List<double>()).ToList();
        var kernelInside = new List<(double F, double B)>();
        for (int r = -1; r < rounds; r++)   // round -1 warms up
            for (int s = 0; s < sides.Length; s++)
            {
                using var scope = NewDisposeScope();
                var inside = CausalAttention.KernelSeconds;
                var sw = Stopwatch.StartNew();
                var o = sides[s].Forward();
                double f = sw.Elapsed.TotalMilliseconds;
                sw.Restart();
                o.backward([dOut]);
                double g = sw.Elapsed.TotalMilliseconds;
                q.grad = null; k.grad = null; v.grad = null;
                if (r >= 0) { fwd[s].Add(f); bwd[s].Add(g); }
                var after = CausalAttention.KernelSeconds;
                if (r >= 0 && after != inside) kernelInside.Add(((after.Forward - inside.Forward) * 1e3, (after.Backward - inside.Backward) * 1e3));
            }
        // Useful causal FLOPs: T(T+1)/2 scores per head; forward 2 products (QK^T, PV), backward 4 (dV, dP, dQ, dK).
        double pairs = (double)b * heads * t * (t + 1) / 2 * d * 2;
        Console.WriteLine($"shape: B {b}, heads {heads}/{kvHeads} kv, T {t}, head_dim {d}, {(dtype == ScalarType.BFloat16 ? "bf16" : "fp32")}; median of {rounds} alternated rounds");
        Console.WriteLine($"{"side",-18}{"fwd ms",9}{"bwd ms",9}{"total ms",10}{"GFLOP/s",9}");
        for (int s = 0; s < sides.Length; s++)
        {
            double f = BenchStats.Median(fwd[s]), g = BenchStats.Median(bwd[s]);
            Console.WriteLine($"{sides[s].Name,-18}{f,9:F2}{g,9:F2}{f + g,10:F2}{6 * pairs / ((f + g) / 1e3) / 1e9,9:F1}");
        }
        if (kernelInside.Count > 0)
            Console.WriteLine($"inside the kernel (no autograd, no allocation): fwd {BenchStats.Median(kernelInside.Select(x => x.F)):F2} ms, bwd {BenchStats.Median(kernelInside.Select(x => x.B)):F2} ms");
        if (sides.Length < 2) return 0;
        BenchStats.PrintFwdBwdRatio("(rope + sdpa)/kernel", fwd, bwd);
        return 0;
    }
}
