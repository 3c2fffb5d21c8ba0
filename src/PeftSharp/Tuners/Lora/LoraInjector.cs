using PeftSharp.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>Adds a LoRA/DoRA adapter to every Linear the config targets; the base is frozen.</summary>
internal static class LoraInjector
{
    /// <summary>
    /// Creates adapter <paramref name="adapterName"/> (trainable), makes it the only active adapter and returns it.
    /// <paramref name="adapterDtype"/>: the adapter tensors' dtype (default: the model's; pass Float32 for PEFT-style
    /// fp32 adapters on a 16-bit base).
    /// </summary>
    public static LoraAdapter Inject(CausalLM model, LoraConfig cfg, string adapterName = "default", int seed = 0, ScalarType? adapterDtype = null) =>
        Create(model, cfg, adapterName, seed, adapterDtype, trainable: true, initialise: true, activate: true);

    /// <summary>The parameters an optimiser should update for this adapter.</summary>
    public static IEnumerable<Parameter> TrainableParameters(CausalLM model, string adapterName = "default") =>
        LoraModel.Of(model).Get(adapterName).Parameters().Where(p => p.requires_grad);

    /// <summary>Modules the config selects, or an error listing what the model has.</summary>
    public static List<TunableLinear> Targets(CausalLM model, LoraConfig cfg)
    {
        var matcher = cfg.Matcher();
        var all = model.Linears().ToList();
        var hits = all.Where(l => matcher.Matches(l.ModulePath)).ToList();
        if (hits.Count == 0)
        {
            string targets = cfg.TargetModules is { } t ? $"[{string.Join(", ", t)}]" : $"'{cfg.TargetModulesRegex}'";
            var shortNames = all.Select(l => l.ModulePath.Split('.').Last()).Distinct();
            throw new ArgumentException($"target_modules {targets} matched no module of this model; its Linear modules are " +
                $"{string.Join(", ", shortNames)} (e.g. {all[0].ModulePath})");
        }
        return hits;
    }

    internal static LoraAdapter Create(CausalLM model, LoraConfig cfg, string name, int seed, ScalarType? adapterDtype, bool trainable, bool initialise, bool activate)
    {
        var registry = LoraModel.Of(model);
        if (registry.Adapters.ContainsKey(name)) throw new ArgumentException($"adapter '{name}' already exists on this model");
        var targets = Targets(model, cfg);
        foreach (var p in model.parameters()) p.requires_grad = false;
        var dtype = adapterDtype ?? model.Dtype;
        var device = model.Device;
        using var g = new Generator((ulong)seed);
        var layers = new Dictionary<string, LoraLayer>();
        // PiSSA keeps the residual W - (principal part) as the base, on creation and on load alike: PEFT's update_layer
        // runs pissa_init whenever it builds the layer (from_pretrained too), then loads the trained A and B over it. A
        // loaded PiSSA adapter on the unchanged base would count the principal part twice, silently.
        bool pissa = cfg.IsPissa;
        // A second one would take the residual of the residual (PEFT only warns): refused, by name.
        if (pissa && registry.Adapters.Values.FirstOrDefault(a => a.IsPissa) is { } other)
            throw new ArgumentException($"adapter '{name}': PiSSA adapter '{other.Name}' already replaced this base's weights by their residual; " +
                "a second PiSSA adapter cannot share the base (merge the first one, or convert it to a plain LoRA)");
        var baseBefore = pissa ? IO.BaseFingerprint.Compute(model, targets.Select(l => l.ModulePath)) : null;
        try
        {
            using var _ = no_grad();
            foreach (var lin in targets)
            {
                if (lin.MergedAdapter is not null)
                    throw new InvalidOperationException($"{lin.ModulePath}: adapter '{lin.MergedAdapter}' is merged; unmerge before adding another");
                int r = cfg.RankFor(lin.ModulePath);
                double s = cfg.ScalingFor(lin.ModulePath);
                if (!initialise && pissa)
                {
                    var (a0, b0) = LoraWeightsInit.Create(cfg, lin, r, s, g, dtype, device); // rewrites the base; A, B come from the file
                    a0.Dispose();
                    b0.Dispose();
                }
                var (a, b) = initialise ? LoraWeightsInit.Create(cfg, lin, r, s, g, dtype, device)
                    : (zeros(new[] { (long)r, lin.InFeatures }, dtype, device), zeros(new[] { lin.OutFeatures, (long)r }, dtype, device));
                Tensor? m = null;
                if (cfg.UseDora) m = initialise ? DoraMagnitude(lin, a, b, s, dtype) : zeros(new[] { lin.OutFeatures }, dtype, device);
                layers[lin.ModulePath] = new LoraLayer(name, a, b, m, s, cfg.LoraDropout, trainable);
            }
        }
        catch
        {
            foreach (var l in layers.Values) l.Dispose();
            throw;
        }
        foreach (var lin in targets)
        {
            lin.Adapters[name] = layers[lin.ModulePath];
            lin.MixedBatchApply ??= LoraMixedBatch.Apply;
        }
        var adapter = new LoraAdapter(name, cfg, layers) { BaseBeforeInit = baseBefore };
        registry.Register(adapter);
        if (activate) registry.SetActive(name);
        return adapter;
    }

    /// <summary>DoRA starts with m = ||W + s·B·A|| per row, so the initial model equals the base.</summary>
    static Tensor DoraMagnitude(TunableLinear lin, Tensor a, Tensor b, double s, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        return LoraLayer.RowNorm(lin.DenseWeight(dtype), a, b, s).MoveToOuterDisposeScope();
    }
}
