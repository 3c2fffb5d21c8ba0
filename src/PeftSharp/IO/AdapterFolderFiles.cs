using PeftSharp.Models;

namespace PeftSharp.IO;

/// <summary>
/// The adapter folder format every tuning method shares (PEFT's): its two files, and the check of the base fingerprint
/// a folder records (<see cref="BaseFingerprint.ConfigKey"/> in adapter_config.json) against the model it is loaded on.
/// Writing is <see cref="AdapterFolderWriter"/>'s; reading a method's config and tensors is the method's (Tuners/).
/// </summary>
internal static class AdapterFolderFiles
{
    /// <summary>The config file of an adapter folder (peft_type and the method's keys).</summary>
    public const string ConfigFile = "adapter_config.json";
    /// <summary>The tensor file of an adapter folder.</summary>
    public const string WeightsFile = "adapter_model.safetensors";

    /// <summary>A QLoRA adapter on a dense base: same base if quantising these dense weights as recorded reproduces the fingerprint.</summary>
    static bool TrainedOnQuantizedCopy(CausalLM model, BaseFingerprint recorded)
    {
        if (model.QuantizationScheme != "none" || Quantization.Nf4Options.TryParseScheme(recorded.Scheme) is not { } options) return false;
        return recorded.Differences(BaseFingerprint.Compute(model, recorded.ModulePaths, new Quantization.Nf4Quantizer(options))).Count == 0;
    }

    /// <summary>
    /// Compares the base fingerprint an adapter folder records with the model (<paramref name="knownBase"/> when already
    /// computed): a mismatch is an error naming <paramref name="dir"/>, or a warning with <paramref name="allowMismatch"/>.
    /// </summary>
    public static void CheckBase(CausalLM model, BaseFingerprint recorded, BaseFingerprint? knownBase, string dir, bool allowMismatch)
    {
        var diff = recorded.Differences(knownBase?.Restrict(recorded.ModulePaths) ?? BaseFingerprint.Compute(model, recorded.ModulePaths));
        if (diff.Count == 0) return;
        if (TrainedOnQuantizedCopy(model, recorded))
        {
            // PEFT's usual way to serve a QLoRA adapter: on (or merged into) the 16/32-bit base it was quantised from.
            PeftLogging.Warn($"{dir}: adapter was trained on the {recorded.Scheme} quantised copy of this base; applying it to the dense " +
                 $"{model.Dtype.ToString().ToLowerInvariant()} weights (outputs differ from training by the quantisation error; " +
                 "to reproduce training exactly, quantise the base with `peft quantize` and pass that folder as --model)");
            return;
        }
        string msg = $"{dir}: adapter was saved for a different base model ({diff.Count} difference(s): {string.Join("; ", diff.Take(8))}{(diff.Count > 8 ? "; ..." : "")})";
        // The reverse of TrainedOnQuantizedCopy: a LoRA trained on dense weights, loaded on a quantised base (a qlora or
        // qdora method, a `peft quantize` folder). The dense weights are gone, so sameness cannot be checked; the likely
        // fix is to load the base dense, which "pass --allow-base-mismatch" alone would not say.
        if (recorded.Scheme == "none" && model.QuantizationScheme != "none")
            msg = $"{dir}: adapter was trained on a dense base, and this model is {model.QuantizationScheme}-quantised; load the dense base " +
                  "(train: --method/--adapter-method lora or dora, not qlora/qdora; or its unquantised folder as --model)" +
                  (diff.Count > 1 ? $" ({diff.Count} difference(s): {string.Join("; ", diff.Take(4))}{(diff.Count > 4 ? "; ..." : "")})" : "");
        if (!allowMismatch) throw new InvalidDataException(msg + "; pass --allow-base-mismatch to load it anyway");
        PeftLogging.Warn(msg);
    }
}
