using System.Text.Json.Nodes;
using PeftSharp.Models;

namespace PeftSharp.IO;

/// <summary>
/// The adapter folder format every tuning method shares (PEFT's two files, plus PeftSharp's <see cref="SidecarFile"/>),
/// reading the base fingerprint a folder records (<see cref="RecordedBase"/>) and checking it against the model it is
/// loaded on. Writing is <see cref="AdapterFolderWriter"/>'s; reading a method's config and tensors is the method's (Tuners/).
/// </summary>
internal static class AdapterFolderFiles
{
    /// <summary>The config file of an adapter folder (peft_type and the method's keys).</summary>
    public const string ConfigFile = "adapter_config.json";
    /// <summary>The tensor file of an adapter folder.</summary>
    public const string WeightsFile = "adapter_model.safetensors";

    /// <summary>
    /// PeftSharp's own metadata of an adapter folder, beside adapter_config.json: <c>{"base_fingerprint": {...}}</c>,
    /// and after training on chat data <c>"chat": {...}</c> (<see cref="Chat.AdapterChatRecord"/>). Not in adapter_config.json: PEFT passes that file's keys to its config dataclass, so before 0.14 an unknown key is
    /// a TypeError and from 0.14 on a warning telling the user to upgrade PEFT (peft/src/peft/config.py,
    /// PeftConfigMixin.from_peft_type). PEFT never opens this file.
    /// </summary>
    public const string SidecarFile = "peftsharp_adapter.json";

    /// <summary>The sidecar's key holding the <see cref="BaseFingerprint"/>.</summary>
    const string FingerprintKey = "base_fingerprint";

    /// <summary>The sidecar's content for a folder recording <paramref name="fingerprint"/>.</summary>
    public static JsonObject Sidecar(BaseFingerprint fingerprint) => new() { [FingerprintKey] = fingerprint.ToJson() };

    /// <summary>The folder's sidecar (<see cref="SidecarFile"/>), or null when it has none (PEFT's folders, older PeftSharp ones).</summary>
    public static JsonObject? ReadSidecar(string dir)
    {
        string path = Path.Combine(dir, SidecarFile);
        return File.Exists(path) ? JsonFile.ReadObject(path) : null;
    }

    /// <summary>
    /// The base fingerprint the adapter folder <paramref name="dir"/> records (<paramref name="config"/>: its parsed
    /// adapter_config.json): the sidecar's, or in a folder saved before the sidecar existed the one under
    /// <see cref="BaseFingerprint.LegacyConfigKey"/> in adapter_config.json; null when it records none (PEFT's own
    /// folders). A folder holding both, different, is refused naming both files: which one is right cannot be told.
    /// </summary>
    public static BaseFingerprint? RecordedBase(string dir, JsonObject config)
    {
        string configPath = Path.Combine(dir, ConfigFile), sidecarPath = Path.Combine(dir, SidecarFile);
        var legacy = config[BaseFingerprint.LegacyConfigKey] is JsonObject l ? BaseFingerprint.FromJson(l, configPath, BaseFingerprint.LegacyConfigKey) : null;
        var sidecar = ReadSidecar(dir)?[FingerprintKey] switch
        {
            null => null,
            JsonObject f => BaseFingerprint.FromJson(f, sidecarPath, FingerprintKey),
            var other => throw new InvalidDataException($"{sidecarPath}: '{FingerprintKey}' must be an object, got {other.GetValueKind().ToString().ToLowerInvariant()}"),
        };
        if (legacy is not null && sidecar is not null && (legacy.Digest != sidecar.Digest || legacy.Source != sidecar.Source))
            throw new InvalidDataException($"{sidecarPath} and {configPath} record different base models ({FingerprintKey} digest " +
                $"{sidecar.Digest[..12]} vs '{BaseFingerprint.LegacyConfigKey}' digest {legacy.Digest[..12]}); keep the one for this " +
                $"adapter's base and delete the other ('{BaseFingerprint.LegacyConfigKey}' in adapter_config.json is the older layout)");
        return sidecar ?? legacy;
    }

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
