using PeftSharp.Memory;
using CausalLM = PeftSharp.Models.CausalLM;
using TorchSharp.Modules;

namespace PeftSharp.Tuners.PromptTuning;

/// <summary>Prompt tuning in the method registry (one soft prompt per model: it is the model's input-embeddings hook).</summary>
internal sealed class PromptTuningMethod : IPeftMethod
{
    public static readonly PromptTuningMethod Instance = new();
    PromptTuningMethod() { }

    public string PeftType => PromptTuningConfig.PeftType;
    public Type ConfigType => typeof(PromptTuningConfig);
    public IPeftConfig DefaultConfig { get; } = new PromptTuningConfig();
    /// <summary>PEFT's prompt tuning prepends virtual tokens: outputs change from the first step.</summary>
    public bool FreshAdapterIsIdentity => false;

    public IPeftAdapter Attach(CausalLM model, IPeftConfig config, string name, AttachOptions options)
    {
        foreach (var p in model.parameters()) p.requires_grad = false;
        var prompt = PromptEmbeddings.Create(model, (PromptTuningConfig)config, options.Encode, options.Seed);
        return new PromptTuningAdapter(model, Attached(model, prompt), name, options.BaseModelNameOrPath);
    }

    public IPeftAdapter Load(CausalLM model, string dir, string name, AdapterLoadOptions options)
    {
        var prompt = PromptEmbeddings.Load(model, dir, options.AllowBaseMismatch);
        prompt.Embeddings.requires_grad = options.Trainable;
        return new PromptTuningAdapter(model, Attached(model, prompt), name);
    }

    static PromptEmbeddings Attached(CausalLM model, PromptEmbeddings prompt)
    {
        try { return prompt.AttachTo(model); }
        catch { prompt.Dispose(); throw; }
    }

    public long TrainableParameterCount(ModelShape shape, IPeftConfig config) =>
        (long)((PromptTuningConfig)config).NumVirtualTokens * shape.Config.HiddenSize;
}

/// <summary>A soft prompt of a model under a name.</summary>
internal sealed class PromptTuningAdapter(CausalLM model, PromptEmbeddings prompt, string name, string baseModel = "") : IPeftAdapter
{
    public string Name => name;
    public IPeftMethod Method => PromptTuningMethod.Instance;
    public IPeftConfig Config => prompt.Config;
    public PromptEmbeddings Prompt => prompt;
    public bool Active { get => prompt.Active; set => prompt.Active = value; }

    public IEnumerable<(string Key, Parameter Param)> NamedParameters() => [("prompt_embeddings", prompt.Embeddings)];

    public void Save(string dir) => prompt.Save(model, dir, baseModel);

    public string? CannotMergeReason => "a soft prompt is an input, not a weight change, so it cannot be merged into the base";

    public void MergeAndUnload() => throw new NotSupportedException($"adapter '{Name}': {CannotMergeReason}");

    public void Dispose() => prompt.Dispose();
}
