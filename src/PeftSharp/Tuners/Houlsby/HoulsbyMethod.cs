using PeftSharp.Memory;
using CausalLM = PeftSharp.Models.CausalLM;
using TorchSharp.Modules;

namespace PeftSharp.Tuners.Houlsby;

/// <summary>Houlsby bottleneck adapters in the method registry (one Houlsby adapter per model: each layer has one slot).</summary>
internal sealed class HoulsbyMethod : IPeftMethod
{
    public static readonly HoulsbyMethod Instance = new();
    HoulsbyMethod() { }

    public string PeftType => HoulsbyConfig.PeftType;
    public Type ConfigType => typeof(HoulsbyConfig);
    public IPeftConfig DefaultConfig { get; } = new HoulsbyConfig();
    public bool FreshAdapterIsIdentity => true;

    public IPeftAdapter Attach(CausalLM model, IPeftConfig config, string name, AttachOptions options)
    {
        var cfg = (HoulsbyConfig)config;
        foreach (var p in model.parameters()) p.requires_grad = false;
        var adapter = new HoulsbyAdapter(model, cfg, name, options.BaseModelNameOrPath);
        HoulsbyAdapters.Attach(model, cfg, options.Seed, adapter.Runs);
        return adapter;
    }

    public IPeftAdapter Load(CausalLM model, string dir, string name, AdapterLoadOptions options)
    {
        HoulsbyAdapter? adapter = null;
        // The config is read by Load itself; the handle's config is filled from what it read.
        var cfg = HoulsbyAdapters.Load(model, dir, () => adapter?.Runs() ?? false, options.AllowBaseMismatch);
        adapter = new HoulsbyAdapter(model, cfg, name);
        foreach (var (_, p) in adapter.NamedParameters()) p.requires_grad = options.Trainable;
        return adapter;
    }

    /// <summary>Per adapter: down [b, h] + bias [b], up [h, b] + bias [h].</summary>
    public long TrainableParameterCount(ModelShape shape, IPeftConfig config)
    {
        var cfg = (HoulsbyConfig)config;
        long h = shape.Config.HiddenSize, b = cfg.Bottleneck(shape.Config.HiddenSize);
        int perLayer = (cfg.AfterAttention ? 1 : 0) + (cfg.AfterMlp ? 1 : 0);
        return shape.Config.NumHiddenLayers * perLayer * (2 * h * b + b + h);
    }
}

/// <summary>The Houlsby adapters of a model under one name.</summary>
internal sealed class HoulsbyAdapter(CausalLM model, HoulsbyConfig config, string name, string baseModel = "") : IPeftAdapter
{
    public string Name => name;
    public IPeftMethod Method => HoulsbyMethod.Instance;
    public IPeftConfig Config => config;
    public bool Active { get; set; } = true;

    /// <summary>What the bottleneck hooks ask before each forward.</summary>
    internal Func<bool> Runs => () => Active && !model.State.Disabled;

    public IEnumerable<(string Key, Parameter Param)> NamedParameters() => HoulsbyAdapters.Parameters(model).Select(p => (p.Name, p.P));

    public void Save(string dir) => HoulsbyAdapters.Save(model, config, dir, baseModel);

    public string? CannotMergeReason => "Houlsby adapters add non-linear layers, which cannot be folded into the base weights";

    public void MergeAndUnload() => throw new NotSupportedException($"adapter '{Name}': {CannotMergeReason}");

    public void Dispose() => HoulsbyAdapters.Detach(model);
}
