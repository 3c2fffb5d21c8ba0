using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Tuners.Houlsby;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.PromptTuning;

namespace PeftSharp.Tuners;

/// <summary>
/// The method registry (PEFT's <c>PEFT_TYPE_TO_CONFIG_MAPPING</c> + <c>register_peft_method</c>): every tuning method,
/// listed here and only here. A new method adds one line to <see cref="All"/>. "Load whatever adapter this folder
/// holds" reads adapter_config.json's peft_type and dispatches here.
/// </summary>
public static class PeftMethods
{
    /// <summary>Every registered method (LoRA covers DoRA, QLoRA and QDoRA: they are LoRA configs).</summary>
    public static readonly IReadOnlyList<IPeftMethod> All = [LoraMethod.Instance, HoulsbyMethod.Instance, PromptTuningMethod.Instance];

    /// <summary>The method of a peft_type, or an error naming <paramref name="source"/> and the supported types.</summary>
    /// <exception cref="InvalidDataException">No registered method has that peft_type (message: the source, the type, the supported ones).</exception>
    public static IPeftMethod ForPeftType(string peftType, string source) =>
        All.FirstOrDefault(m => m.PeftType == peftType)
        ?? throw new InvalidDataException($"{source}: peft_type '{peftType}' is not supported ({string.Join(", ", All.Select(m => m.PeftType))})");

    /// <summary>The method a config belongs to.</summary>
    /// <exception cref="ArgumentException">No registered method takes this config type.</exception>
    public static IPeftMethod ForConfig(IPeftConfig config) =>
        All.FirstOrDefault(m => m.ConfigType == config.GetType())
        ?? throw new ArgumentException($"{config.GetType().Name}: no registered tuning method takes this config");

    /// <summary>
    /// The method of the adapter a folder holds, from adapter_config.json's peft_type (required, as PEFT requires it).
    /// A full model folder (what full fine-tuning saves) is named as such.
    /// </summary>
    /// <exception cref="FileNotFoundException">The folder has no adapter_config.json (a full model folder is named as such).</exception>
    /// <exception cref="InvalidDataException">adapter_config.json is not a JSON object, lacks peft_type, or names one no method registers.</exception>
    public static IPeftMethod ForFolder(string dir)
    {
        string path = Path.Combine(dir, AdapterFolderFiles.ConfigFile);
        if (!File.Exists(path))
            throw new FileNotFoundException(File.Exists(Path.Combine(dir, "config.json"))
                ? $"{dir}: a full model folder (full fine-tuning saves one), not an adapter; load it as the model" : $"{path}: not found (not an adapter folder)", path);
        var json = JsonFile.ReadObject(path);
        string? type = json["peft_type"] is JsonValue v && v.TryGetValue<string>(out var t) ? t : null;
        return type is null ? throw LoraConfig.MissingPeftType(path) : ForPeftType(type, path);
    }
}
