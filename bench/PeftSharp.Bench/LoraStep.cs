using PeftSharp.Models;
using PeftSharp.Tuners.Lora;
using TorchSharp.Modules;
using static TorchSharp.torch;
using AdamW = PeftSharp.Training.Optim.AdamW;
using AdamWOptions = PeftSharp.Training.Optim.AdamWOptions;

namespace PeftSharp.Bench;

/// <summary>
/// The LoRA step's shape flags, with peer_lora_step.py's names and defaults, read once for the benches that run the
/// step (lora-step, lora-step-ab, bf16-step): --vocab --hidden --layers --heads --kv-heads --intermediate --batch --seq
/// --r --alpha --targets.
/// </summary>
internal sealed record LoraStepShape(ModelConfig Config, int Batch, int Seq, int R, double Alpha, string[] Targets)
{
    public static LoraStepShape Parse(BenchArgs a) => new(
        BenchModels.Config(a.Int("vocab", 4096), a.Int("hidden", 512), a.Int("layers", 4), a.Int("heads", 8), a.Int("kv-heads", 8), a.Int("intermediate", 0)),
        a.Int("batch", 4), a.Int("seq", 256), a.Int("r", 8), a.Double("alpha", 16), a.Get("targets", "q_proj,v_proj").Split(','));

    /// <summary>The step's token ids, [batch, seq + 1], drawn from seed 0 (after the model's own random weights).</summary>
    public Tensor Ids()
    {
        manual_seed(0);
        return randint(0, Config.VocabSize, [Batch, Seq + 1]);
    }
}

/// <summary>
/// One LoRA training step as the peer (peer_lora_step.py, mode train) runs it: forward, mean next-token cross
/// entropy, backward, AdamW (lr 1e-4, torch defaults otherwise) on the adapter parameters, zeroed gradients.
/// </summary>
public sealed class LoraStep : IDisposable
{
    readonly CausalLM _model;
    readonly AdamW _opt;
    readonly Tensor _input, _target;
    readonly long _vocab;

    internal LoraAdapter Adapter { get; }
    public long OptimizerStateBytes => _opt.StateBytes;
    public long Tokens { get; }

    /// <param name="targets">module names, or ["all-linear"]</param>
    /// <param name="packWeights">`peft train --pack-weights`: null = auto (the default), true, false.</param>
    public LoraStep(CausalLM model, int r, double alpha, IReadOnlyList<string> targets, Tensor ids, int seed = 0, bool? packWeights = null)
    {
        _model = model;
        _vocab = model.Config.VocabSize;
        var cfg = targets is ["all-linear"]
            ? new LoraConfig { R = r, LoraAlpha = alpha, TargetModulesRegex = "all-linear" }
            : new LoraConfig { R = r, LoraAlpha = alpha, TargetModules = targets };
        Adapter = LoraInjector.Inject(model, cfg, "default", seed, ScalarType.Float32);
        model.train();
        _opt = new AdamW(Adapter.PeftNamedParameters().Select(p => (p.Key, p.Param)).ToList(), new AdamWOptions(LearningRate: 1e-4));
        long t = ids.shape[1] - 1;
        _input = ids.narrow(1, 0, t);
        _target = ids.narrow(1, 1, t);
        Tokens = ids.shape[0] * t;
        // As the trainers do before their steps: the frozen weights packed for MKL where `peft train` would (auto).
        _packing = PeftSharp.Training.FrozenWeightPacking.Apply(model, packWeights, Tokens);
    }

    readonly PeftSharp.Training.FrozenWeightPacking _packing;

    /// <summary>Whether and how the frozen weights are packed (the trainers' auto rule), for the bench's output.</summary>
    public string Packing => _packing.Description;

    /// <summary>Runs one step; returns the loss.</summary>
    public double Run()
    {
        double loss;
        using (var scope = NewDisposeScope())
        {
            var logits = _model.Forward(_input);
            Tensor l;
            // The mean loss in fp32 whatever the model's dtype (a no-op on an fp32 model) through the trainer's path
            // (Training/CausalLmLoss): the loss kernel where it applies, libtorch's cross_entropy elsewhere.
            using (ForwardProfiler.Measure("loss (cross entropy)"))
            {
                var flat = logits.reshape(-1, _vocab).to_type(ScalarType.Float32);
                var targets = _target.reshape(-1);
                l = PeftSharp.Kernels.CrossEntropy.Applies(flat)
                    ? PeftSharp.Kernels.CrossEntropy.Sum(flat, targets) / targets.shape[0]
                    : nn.functional.cross_entropy(flat, targets);
            }
            using (ForwardProfiler.Measure("backward (all ops; libtorch autograd)"))
            {
                l.backward();
                PeftSharp.Kernels.ReturnedGradients.Release();   // as the trainers do: the kernels' last gradients go now
            }
            loss = l.item<float>();
        }
        using (ForwardProfiler.Measure("AdamW step + zero_grad"))
        {
            _opt.Step();
            _opt.ZeroGrad();
        }
        return loss;
    }

    public void Dispose()
    {
        _packing.Dispose();
        _opt.Dispose();
        _input.Dispose();
        _target.Dispose();
    }
}

/// <summary>FLOPs of one LoRA step and the matmul throughput they are measured against.</summary>
public static class StepFlops
{
    public const string Formula =
        "step = 4*N*P_frozen + 6*N*P_lora + 12*B*T^2*d_q*L  (N=B*T tokens; P_frozen = frozen matmul weights incl. lm_head; " +
        "P_lora = r*(in+out) per adapted module; forward 2*N*P, backward 2*N*P_frozen for activation grads only (frozen weights get " +
        "no weight grads) and 4*N*P_lora; attention QK^T and AV counted over the full T x T (as the peer's torch 1.13 computes it " +
        "with a mask) at 4*B*T^2*d_q per layer forward, 2x that backward; the few backward matmuls below layer 0's first adapter are not subtracted)";

    internal static double Step(CausalLM model, LoraAdapter adapter, long batch, long seq)
    {
        var c = model.Config;
        double n = batch * seq;
        double frozen = model.Linears().Sum(l => (double)l.InFeatures * l.OutFeatures)
            + (model.lm_head is null ? (double)c.VocabSize * c.HiddenSize : 0);
        double lora = adapter.Layers.Values.Sum(l => (double)l.A.numel() + l.B.numel());
        double dq = (double)c.NumHeads * c.HeadDim;
        return 4 * n * frozen + 6 * n * lora + 12.0 * batch * seq * seq * dq * c.NumLayers;
    }

    /// <summary>
    /// The step's frozen matmuls alone, in its shapes, layouts and GEMM path: for every base Linear (lm_head included) its
    /// forward x W^T and its backward's input gradient g W, one after another as a step runs them (the weights from
    /// memory, not one hot pair in cache), median GFLOP/s over <paramref name="passes"/> passes. Where the step packs its
    /// frozen weights for MKL (a Linear that <see cref="TunableLinear.IsPacked"/>), the products go through the same packed
    /// GEMMs (the Linear's own packed copies); else through libtorch's linear and matmul. A ceiling for this step: a step that did
    /// nothing but these matmuls would run at this rate, whatever the 2048^3 matmul reaches.
    /// </summary>
    internal static double FrozenGemmGflops(CausalLM model, long tokens, int passes = 5)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var linears = model.Linears().Where(l => l.weight is not null).ToList();
        var weights = linears.Select(l => ((Tensor)l.weight!, l.PackedPair)).ToList();
        if (model.lm_head is null) weights.Add((model.model.embed_tokens.weight, null));
        var xs = weights.Select(w => w.Item1.shape[1]).Distinct().ToDictionary(d => d, d => randn(tokens, d));
        var gs = weights.Select(w => w.Item1.shape[0]).Distinct().ToDictionary(d => d, d => randn(tokens, d));
        var pairs = weights.Select(w => w.Item2 is { } pair && pair.Rows <= tokens ? pair : null).ToList();
        {
            double flops = weights.Sum(w => 4.0 * tokens * w.Item1.shape[0] * w.Item1.shape[1]);
            var times = new List<double>();
            for (int p = 0; p < passes + 1; p++)
            {
                var sw = System.Diagnostics.Stopwatch.StartNew();
                for (int i = 0; i < weights.Count; i++)
                {
                    var w = weights[i].Item1;
                    using (pairs[i] is { } pair ? pair.Forward.Times(xs[w.shape[1]]) : nn.functional.linear(xs[w.shape[1]], w)) { }
                    using (pairs[i] is { } pair2 ? pair2.Backward.Times(gs[w.shape[0]]) : gs[w.shape[0]].matmul(w)) { }
                }
                if (p > 0) times.Add(sw.Elapsed.TotalSeconds);   // the first pass warms up
            }
            return flops / BenchStats.Median(times) / 1e9;
        }
    }

    /// <summary>GFLOP/s of one square fp32 matmul a @ b on the current thread setting.</summary>
    public static double MatmulGflops(Tensor a, Tensor b)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var c = a.matmul(b);
        return 2.0 * a.shape[0] * a.shape[1] * b.shape[1] / sw.Elapsed.TotalSeconds / 1e9;
    }
}
