using PeftSharp.IO;
using PeftSharp.Memory;
using CausalLM = PeftSharp.Models.CausalLM;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>LoRA in the method registry: plain LoRA, DoRA (use_dora), and on an NF4 base QLoRA / QDoRA.</summary>
internal sealed class LoraMethod : IPeftMethod
{
    public static readonly LoraMethod Instance = new();
    LoraMethod() { }

    public string PeftType => LoraConfig.PeftTypeName;
    public Type ConfigType => typeof(LoraConfig);
    public IPeftConfig DefaultConfig { get; } = new LoraConfig { R = 8, LoraAlpha = 16, TargetModulesRegex = TargetMatcher.AllLinearKeyword };
    public bool FreshAdapterIsIdentity => true;

    public IPeftAdapter Attach(CausalLM model, IPeftConfig config, string name, AttachOptions options)
    {
        var cfg = ((LoraConfig)config).Validated("LoraConfig");
        // Adapters train in fp32 even on a 16-bit base, as PEFT does.
        var adapter = LoraInjector.Create(model, cfg, name, options.Seed, options.AdapterDtype ?? ScalarType.Float32, trainable: true, initialise: true, activate: false);
        return new LoraPeftAdapter(model, adapter);
    }

    public IPeftAdapter Load(CausalLM model, string dir, string name, AdapterLoadOptions options)
    {
        var adapter = PeftAdapterIO.Load(model, dir, name, options.AllowBaseMismatch, options.Trainable, options.KnownBase);
        return new LoraPeftAdapter(model, adapter);
    }

    public long TrainableParameterCount(ModelShape shape, IPeftConfig config) => LoraParameterCount.For(shape, (LoraConfig)config);
}

/// <summary>A LoRA/DoRA adapter of a model as the registry sees it; the layers stay in <see cref="LoraModel"/>.</summary>
internal sealed class LoraPeftAdapter(CausalLM model, LoraAdapter adapter) : IPeftAdapter
{
    public string Name => adapter.Name;
    public IPeftMethod Method => LoraMethod.Instance;
    public IPeftConfig Config => adapter.Config;
    public LoraAdapter Adapter => adapter;

    public IEnumerable<(string Key, Parameter Param)> NamedParameters() => adapter.PeftNamedParameters();

    /// <summary>LoRA adapters are active through the model's <see cref="Models.AdapterState.Active"/> list (weight 1 here).</summary>
    public bool Active
    {
        get => model.State.Active.Any(a => a.Name == Name);
        set
        {
            if (!value) model.State.Active.RemoveAll(a => a.Name == Name);
            else if (!Active) model.State.Active.Add((Name, 1.0));
        }
    }

    /// <summary>The base recorded on save instead of the loaded model's (a 16-bit compute run records its checkpoint's fp32 fingerprint).</summary>
    public BaseFingerprint? RecordedBase { get; set; }

    public void Save(string dir) => PeftAdapterIO.Save(model, Name, dir, RecordedBase);

    public string? CannotMergeReason => model.QuantizationScheme != "none"
        ? $"the base is quantised ({model.QuantizationScheme}); load it dense to merge" : null;

    public void MergeAndUnload() => LoraModel.Of(model).MergeAndUnload(Name);

    public void Dispose()
    {
        var lora = LoraModel.Of(model);
        if (lora.Adapters.ContainsKey(Name)) lora.Delete(Name);
    }
}
