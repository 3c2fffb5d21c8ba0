using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Training.Methods;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Training.Preference;

/// <summary>
/// Builds the policy and the reference of a preference run on one model. The policy trains a LoRA-family adapter
/// ("default"); the reference is the same model with it switched off. With an initial adapter (an SFT result) the policy
/// continues that adapter and a frozen second copy of it ("reference") plays the reference, so the reference is
/// base + SFT adapter, as TRL does when the adapter is loaded twice (model_adapter_name / ref_adapter_name).
/// </summary>
internal static class PreferenceSetup
{
    public const string ReferenceAdapter = "reference";

    public static (CausalLM Model, ITrainingMethod Method, ReferenceModel Reference) Create(string modelDir, MethodOptions adapter, string? initAdapter,
        TextTokenizer tokenizer, Device device, int seed = 0)
    {
        if (!adapter.IsLora)
            throw new ArgumentException($"--adapter-method: '{adapter.Method}' cannot train DPO/ORPO; use lora, dora, qlora or qdora (the reference is the model with the adapter off)");
        var (model, method) = MethodFactory.Create(modelDir, adapter, tokenizer, device, seed: seed);
        if (initAdapter is null) return (model, method, new ReferenceModel(model));
        try
        {
            var lora = LoraModel.Of(model);
            lora.Delete("default");
            PeftAdapterIO.Load(model, initAdapter, ReferenceAdapter, trainable: false);
            var policy = PeftAdapterIO.Load(model, initAdapter, "default", trainable: true);   // loaded last: the active one
            string label = (policy.Config.UseDora ? "DoRA" : "LoRA") + (model.QuantizationScheme != "none" ? $" ({model.QuantizationScheme})" : "") + $" continued from {initAdapter}";
            return (model, new AdapterTraining(model, new LoraPeftAdapter(model, policy), label), new ReferenceModel(model, ReferenceAdapter));
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
