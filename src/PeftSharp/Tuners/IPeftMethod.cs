using PeftSharp.IO;
using PeftSharp.Memory;
using PeftSharp.Models;
using CausalLM = PeftSharp.Models.CausalLM;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>A tuning method's config (<c>LoraConfig</c>, <c>HoulsbyConfig</c>, <c>PromptTuningConfig</c>): what <see cref="PeftModel.AddAdapter"/> takes.</summary>
public interface IPeftConfig
{
    /// <summary>adapter_config.json's <c>peft_type</c> ("LORA", "PROMPT_TUNING", ...): the key of the method registry.</summary>
    string PeftType { get; }
}

/// <summary>How a fresh adapter is initialised.</summary>
public sealed record AttachOptions
{
    /// <summary>Seed of the adapter's random initialisation.</summary>
    public int Seed { get; init; }
    /// <summary>
    /// The tokenizer's encoder, for inits that start from a text (prompt tuning's TEXT init): with the tokenizer's default
    /// special tokens, as PEFT's tokenizer(init_text)["input_ids"] (a Llama BOS starts the text, and each repeat of it).
    /// </summary>
    public Func<string, int[]>? Encode { get; init; }
    /// <summary>The adapter tensors' dtype; null = the method's default (LoRA trains in fp32 on any base, as PEFT).</summary>
    public ScalarType? AdapterDtype { get; init; }
    /// <summary>
    /// The base_model_name_or_path the adapter records when saved (PEFT's model.name_or_path); `peft train` gives the
    /// --model it was given. LoRA carries it in its config; the other methods take it from here.
    /// </summary>
    internal string BaseModelNameOrPath { get; init; } = "";
}

/// <summary>How an adapter folder is loaded.</summary>
public sealed record AdapterLoadOptions
{
    /// <summary>Load even when the base fingerprint the folder records differs from the model (then a warning).</summary>
    public bool AllowBaseMismatch { get; init; }
    /// <summary>Load the adapter's parameters with requires_grad (to continue training it).</summary>
    public bool Trainable { get; init; }
    /// <summary>A fingerprint of this model already computed (serving computes it once); null = hash the weights.</summary>
    internal BaseFingerprint? KnownBase { get; init; }
}

/// <summary>
/// One tuning method, as PEFT's <c>register_peft_method</c> registers one: its config type, its <c>peft_type</c>, how
/// a fresh adapter is attached to a model, how its adapter folder is loaded (saving is on the attached adapter, through
/// the one shared <see cref="AdapterFolderWriter"/>), and its trainable parameter count. Every method is listed once,
/// in <see cref="PeftMethods.All"/>.
/// </summary>
public interface IPeftMethod
{
    /// <summary>adapter_config.json's <c>peft_type</c>.</summary>
    string PeftType { get; }
    /// <summary>The config record this method takes.</summary>
    Type ConfigType { get; }
    /// <summary>The method's usual config (what `train --method` starts from; the contract tests use it).</summary>
    IPeftConfig DefaultConfig { get; }
    /// <summary>
    /// Whether a fresh adapter leaves the model's outputs equal to the base's (PEFT's promise for LoRA/DoRA with the
    /// default init and for zero-initialised bottleneck adapters); prompt tuning changes them by design.
    /// </summary>
    bool FreshAdapterIsIdentity { get; }
    /// <summary>A fresh, trainable adapter named <paramref name="name"/>; the base is frozen.</summary>
    IPeftAdapter Attach(CausalLM model, IPeftConfig config, string name, AttachOptions options);
    /// <summary>The adapter a folder holds (its adapter_config.json's peft_type is this method's), as adapter <paramref name="name"/>.</summary>
    IPeftAdapter Load(CausalLM model, string dir, string name, AdapterLoadOptions options);
    /// <summary>
    /// Parameters a fresh adapter with <paramref name="config"/> trains on a model of this shape, from the config alone
    /// (no tensors: what the memory planner and the parameter report count).
    /// </summary>
    long TrainableParameterCount(ModelShape shape, IPeftConfig config);
}

/// <summary>
/// An adapter attached to a model under a name. Disposing it removes it from the model. Every method's adapter runs
/// only while <see cref="Active"/> and the model's adapters are not disabled (<see cref="AdapterState.Disabled"/>).
/// </summary>
public interface IPeftAdapter : IDisposable
{
    /// <summary>The adapter's name in its model (PEFT's adapter_name; "default" for one loaded without a name).</summary>
    string Name { get; }
    /// <summary>The method that attached or loaded it.</summary>
    IPeftMethod Method { get; }
    /// <summary>Its config (what adapter_config.json holds).</summary>
    IPeftConfig Config { get; }
    /// <summary>The adapter's parameters under the keys its adapter_model.safetensors holds.</summary>
    IEnumerable<(string Key, Parameter Param)> NamedParameters();
    /// <summary>Whether the forward uses this adapter.</summary>
    bool Active { get; set; }
    /// <summary>Writes the adapter folder (adapter_config.json with the base fingerprint + adapter_model.safetensors), atomically.</summary>
    void Save(string dir);
    /// <summary>Null when <see cref="MergeAndUnload"/> works here, else why not (one line).</summary>
    string? CannotMergeReason { get; }
    /// <summary>Folds the adapter into the base weights and removes it (PEFT's merge_and_unload).</summary>
    void MergeAndUnload();
}
