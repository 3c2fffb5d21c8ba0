using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tuners.Lora;
using TorchSharp.Modules;

namespace PeftSharp.Training.Methods;

/// <summary>LoRA / DoRA (and QLoRA / QDoRA when the model's base is quantised): trains one named adapter.</summary>
/// <param name="recordedBase">Recorded in the saved adapter instead of the loaded model's fingerprint (16-bit compute:
/// the checkpoint's fp32 fingerprint, so the adapter loads on the base as generate/eval/merge load it).</param>
public sealed class LoraTraining(CausalLM model, LoraAdapter adapter, string label, BaseFingerprint? recordedBase = null) : ITrainingMethod
{
    public string Description
    {
        get
        {
            long trainable = TrainableParameters.Sum(p => p.P.numel());
            return $"{label} r={adapter.Config.R} alpha={adapter.Config.LoraAlpha} on {adapter.Layers.Count} modules: " +
                   $"{trainable / 1e6:F3}M trainable of {model.ParameterCount() / 1e6:F2}M ({100.0 * trainable / model.ParameterCount():F2}%)";
        }
    }

    public IEnumerable<(string Name, Parameter P)> TrainableParameters =>
        adapter.PeftNamedParameters().Where(p => p.Param.requires_grad).Select(p => (p.Key, p.Param));

    public void Save(string dir) => PeftAdapterIO.Save(model, adapter.Name, dir, recordedBase);
}
