using System.Diagnostics;
using PeftSharp.Kernels;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// The gated MLP's act(gate) * up, forward and backward, for every layer of a step at the lora-step shape: the fused
/// kernel (<see cref="SwiGlu"/>) against libtorch's ops as the model called them before (silu, or the tanh-gelu chain,
/// then the product), alternated round by round. gate and up are leaves needing gradients, as the projections'
/// outputs are in training. --dtype bf16: gate, up and the gradient in bf16, as `--compute-dtype bf16` gives them (the
/// ops then run libtorch's bf16 kernels).
/// </summary>
public sealed class SwiGluBench : IBench
{
    public string Name => "swiglu";
    public string Description => "fused act(gate) * up kernel vs libtorch's ops, fwd and bwd ms per step (--tokens 1024 --intermediate 1344 --layers 4 --act silu|gelu --rounds 9 --threads 2 --dtype fp32|bf16)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int n = a.Int("tokens", 1024), inter = a.Int("intermediate", 1344), layers = a.Int("layers", 4);
        int rounds = a.Int("rounds", 9), threads = a.Int("threads", 2);
        bool gelu = a.Get("act", "silu") == "gelu";
        var dtype = a.Get("dtype", "fp32") switch
        {
            "fp32" => ScalarType.Float32,
            "bf16" => ScalarType.BFloat16,
            var d => throw new ArgumentException($"--dtype {d}: expected fp32 or bf16"),
        };
        if (threads > 0) set_num_threads(threads);
        Console.WriteLine($"cpu: {BenchCpu.Describe()}; torch threads {get_num_threads()}");
        if (!SwiGluKernel.Supported) { Console.WriteLine("the kernel needs AVX-512F or AVX2 + FMA: nothing to compare"); return 0; }
        manual_seed(1);
        var gates = Enumerable.Range(0, layers).Select(_ => randn(n, inter).to_type(dtype).requires_grad_(true)).ToArray();
        var ups = Enumerable.Range(0, layers).Select(_ => randn(n, inter).to_type(dtype).requires_grad_(true)).ToArray();
        using var dh = randn(4, n / 4, inter).to_type(dtype);
        Tensor Ops(Tensor g, Tensor u) => (gelu
            ? g * 0.5 * ((g + g.pow(3) * 0.044715) * Math.Sqrt(2 / Math.PI)).tanh().add(1)
            : nn.functional.silu(g)) * u;
        var sides = new (string Name, Func<Tensor, Tensor, Tensor> Forward)[]
            { (gelu ? "gelu-tanh ops * up" : "silu * up (ops)", Ops), ("fused kernel", (g, u) => SwiGlu.Compute(g, u, gelu)) };
        var fwd = sides.Select(_ => new List<double>()).ToList();
        var bwd = sides.Select(_ => new List<double>()).ToList();
        for (int r = -1; r < rounds; r++)   // round -1 warms up
            for (int s = 0; s < sides.Length; s++)
            {
                using var scope = NewDisposeScope();
                var sw = Stopwatch.StartNew();
                // [B, T, I] views of the leaves, as the model's projections hand them over; the views' backward also
                // keeps the leaves' gradient accumulation from copying the gradients the kernel still references.
                var outs = gates.Zip(ups, (g, u) => sides[s].Forward(g.view(4, -1, inter), u.view(4, -1, inter))).ToArray();
                double f = sw.Elapsed.TotalMilliseconds;
                sw.Restart();
                // Backward layer by layer, last first, as a step runs it.
                for (int l = layers - 1; l >= 0; l--) outs[l].backward([dh]);
                double g = sw.Elapsed.TotalMilliseconds;
                foreach (var t in gates.Concat(ups)) t.grad = null;
                if (r >= 0) { fwd[s].Add(f); bwd[s].Add(g); }
            }
        Console.WriteLine($"shape: {layers} layers of [{n}, {inter}] {dtype}, {(gelu ? "gelu_pytorch_tanh" : "silu")}; median of {rounds} alternated rounds");
        BenchStats.PrintFwdBwd(sides.Select(x => x.Name).ToList(), fwd, bwd, 20);
        BenchStats.PrintFwdBwdRatio("ops/kernel", fwd, bwd);
        foreach (var t in gates.Concat(ups)) t.Dispose();
        return 0;
    }
}
