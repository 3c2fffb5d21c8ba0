using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// PEFT's add_weighted_adapter: a new adapter from a weighted combination of existing LoRA adapters.
/// linear / ties / dare_linear combine A and B separately with weights sqrt(w·s) (equal ranks required);
/// cat stacks the ranks (exact: its delta is Σ w·s·B·A); svd truncates Σ w·s·ΔW to the new rank (PEFT passes
/// the already-scaled delta and w·s as weight, so the scaling enters twice; kept for parity with PEFT).
/// The new adapter has lora_alpha = r, i.e. scaling 1 (rsLoRA configs keep PEFT's alpha/sqrt(r)).
/// </summary>
internal static class WeightedAdapter
{
    public static readonly string[] CombinationTypes = ["linear", "cat", "svd", "ties", "dare_linear"];

    public static LoraAdapter Add(CausalLM model, IReadOnlyList<string> adapters, IReadOnlyList<double> weights, string newName,
        string combinationType = "svd", int? svdRank = null, double density = 1.0, string majoritySignMethod = "total", int seed = 0)
    {
        var registry = LoraModel.Of(model);
        if (adapters.Count == 0 || adapters.Count != weights.Count) throw new ArgumentException($"{adapters.Count} adapters but {weights.Count} weights");
        if (!CombinationTypes.Contains(combinationType))
            throw new ArgumentException($"combination_type '{combinationType}' is not one of {string.Join(", ", CombinationTypes)}");
        var sources = adapters.Select(registry.Get).ToList();
        if (sources.Any(a => a.Config.UseDora)) throw new NotSupportedException("weighted combination of DoRA adapters is not supported (PEFT neither)");
        var ranks = sources.SelectMany(a => a.Layers.Values.Select(l => l.Rank)).Distinct().ToList();
        int newRank = combinationType switch
        {
            "cat" => sources.Sum(a => a.Config.R),
            "svd" => svdRank ?? sources.Max(a => a.Config.R),
            _ => ranks.Count == 1 ? ranks[0]
                : throw new ArgumentException($"combination_type {combinationType} needs adapters of equal rank; ranks are {string.Join(", ", ranks)}"),
        };
        if (sources.Any(a => a.Config.RankPattern.Count > 0) && combinationType == "cat")
            throw new NotSupportedException("cat with rank_pattern adapters is not supported");
        var modules = sources.SelectMany(a => a.Layers.Keys).Distinct().ToList();
        var cfg = sources[0].Config with
        {
            R = newRank, LoraAlpha = newRank, RankPattern = new Dictionary<string, int>(), AlphaPattern = new Dictionary<string, double>(),
            TargetModules = modules, TargetModulesRegex = null, ExcludeModules = null, ExcludeModulesRegex = null, LayersToTransform = null,
            InitLoraWeights = LoraInit.True,
        };
        var dtype = sources[0].Layers.Values.First().A.dtype;
        var created = LoraInjector.Create(model, cfg, newName, seed, dtype, trainable: false, initialise: false, activate: false);
        using var g = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (path, target) in created.Layers)
        {
            using var scope = NewDisposeScope();
            var present = sources.Select((a, i) => (Layer: a.Layers.GetValueOrDefault(path), W: weights[i])).Where(x => x.Layer is not null).ToList();
            var (a, b) = combinationType switch
            {
                "cat" => Cat(present!, target),
                "svd" => Svd(present!, newRank),
                _ => Separate(present!, combinationType, density, majoritySignMethod, g),
            };
            target.A.copy_(a);
            target.B.copy_(b);
        }
        return created;
    }

    static (Tensor, Tensor) Cat(List<(LoraLayer Layer, double W)> present, LoraLayer target)
    {
        var a = cat(present.Select(p => p.Layer.A.Times(p.W * p.Layer.Scaling)).ToArray(), 0);
        var b = cat(present.Select(p => (Tensor)p.Layer.B).ToArray(), 1);
        // Modules missing some adapters leave the tail of the rank zero.
        var fullA = zeros_like(target.A); fullA.narrow(0, 0, a.shape[0]).copy_(a);
        var fullB = zeros_like(target.B); fullB.narrow(1, 0, b.shape[1]).copy_(b);
        return (fullA, fullB);
    }

    static (Tensor, Tensor) Svd(List<(LoraLayer Layer, double W)> present, int newRank)
    {
        var delta = MergeMath.TaskArithmetic(present.Select(p => p.Layer.DeltaWeight()).ToList(), present.Select(p => p.W * p.Layer.Scaling).ToArray());
        var (u, s, vh) = linalg.svd(delta.to_type(ScalarType.Float32), fullMatrices: false);
        int k = (int)Math.Min(newRank, s.shape[0]);
        var b = zeros(delta.shape[0], newRank);
        var a = zeros(newRank, delta.shape[1]);
        b.narrow(1, 0, k).copy_(u.narrow(1, 0, k).matmul(diag(s.narrow(0, 0, k))));
        a.narrow(0, 0, k).copy_(vh.narrow(0, 0, k));
        return (a, b);
    }

    static (Tensor, Tensor) Separate(List<(LoraLayer Layer, double W)> present, string type, double density, string sign, Generator g)
    {
        var w = present.Select(p => Math.Sqrt(p.W * p.Layer.Scaling)).ToArray();
        Tensor Combine(List<Tensor> t) => type switch
        {
            "linear" => MergeMath.TaskArithmetic(t, w),
            "ties" => MergeMath.Ties(t, w, density, sign),
            _ => MergeMath.DareLinear(t, w, density, g),
        };
        return (Combine(present.Select(p => (Tensor)p.Layer.A).ToList()), Combine(present.Select(p => (Tensor)p.Layer.B).ToList()));
    }
}
