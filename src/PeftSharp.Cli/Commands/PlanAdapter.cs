using PeftSharp.Hub;
using PeftSharp.IO;
using PeftSharp.Memory;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Houlsby;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.PromptTuning;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// `peft plan --model ADAPTER_FOLDER` (adapter_config.json, no config.json): the user means "plan this adapter", so the
/// plan is of its base (adapter_config.json's base_model_name_or_path, resolved as --model resolves a name: a preset, a
/// folder or config.json, or a repo id already in the Hugging Face cache; never downloaded) with the adapter's method,
/// rank, targets, dropout, virtual tokens or bottleneck, each unless its flag is given. Read from the folder by the
/// engine's own config parsers (no TorchSharp: plain JSON).
/// </summary>
internal sealed record PlanAdapter(string Folder, string BaseName, string BaseConfig, string Method, string Summary)
{
    const string Flag = "--model";

    public int? Rank { get; init; }
    public TargetMatcher? Targets { get; init; }
    public double? LoraDropout { get; init; }
    public int? VirtualTokens { get; init; }
    public int? Bottleneck { get; init; }

    /// <summary>True for a folder holding an adapter and no model (a model folder with an adapter inside stays a model).</summary>
    public static bool IsAdapterFolder(string path) =>
        Directory.Exists(path) && File.Exists(Path.Combine(path, AdapterFolderFiles.ConfigFile)) && !File.Exists(Path.Combine(path, "config.json"));

    /// <summary>The adapter in <paramref name="folder"/> and its base's config; a PlanException naming the folder (and the
    /// base it names, where that is what cannot be found) otherwise.</summary>
    public static PlanAdapter Read(string folder)
    {
        string configPath = Path.Combine(folder, AdapterFolderFiles.ConfigFile);
        try
        {
            var json = JsonFile.ReadObject(configPath);
            string? baseName = json["base_model_name_or_path"]?.GetValue<string>();
            if (string.IsNullOrWhiteSpace(baseName))
                throw new PlanException(Flag, $"adapter folder '{folder}': {AdapterFolderFiles.ConfigFile} names no base model (base_model_name_or_path); pass the base as --model with the adapter's flags");
            string baseConfig = ResolveBase(folder, baseName);
            var method = PeftMethods.ForFolder(folder);
            return method switch
            {
                LoraMethod => FromLora(LoraConfig.FromJson(json, configPath), folder, baseName, baseConfig),
                PromptTuningMethod => FromPromptTuning(PromptTuningConfig.FromJson(json), folder, baseName, baseConfig),
                // The width it was saved with (bottleneck_size); the reduction factor alone where that is absent.
                HoulsbyMethod => json["bottleneck_size"]?.GetValue<int>() is int b
                    ? new PlanAdapter(folder, baseName, baseConfig, "adapter", $"Houlsby adapters, bottleneck {b}") { Bottleneck = b }
                    : new PlanAdapter(folder, baseName, baseConfig, "adapter", $"Houlsby adapters, reduction factor {HoulsbyConfig.FromJson(json).ReductionFactor}"),
                _ => throw new PlanException(Flag, $"{configPath}: peft_type {method.PeftType} has no plan"),
            };
        }
        catch (Exception e) when (e is InvalidDataException or FileNotFoundException or InvalidOperationException or FormatException)
        {
            throw new PlanException(Flag, $"adapter folder '{folder}': {e.Message}");
        }
    }

    static PlanAdapter FromPromptTuning(PromptTuningConfig p, string folder, string baseName, string baseConfig) =>
        new(folder, baseName, baseConfig, "prompt-tuning", $"prompt tuning, {p.NumVirtualTokens} virtual tokens") { VirtualTokens = p.NumVirtualTokens };

    static PlanAdapter FromLora(LoraConfig c, string folder, string baseName, string baseConfig)
    {
        string targets = c.TargetModules is { } list ? string.Join(",", list) : c.TargetModulesRegex ?? "";
        return new PlanAdapter(folder, baseName, baseConfig, c.UseDora ? "dora" : "lora", $"{(c.UseDora ? "DoRA" : "LoRA")} r {c.R}, targets {targets}")
        {
            Rank = c.R,
            Targets = c.Matcher(),
            LoraDropout = c.LoraDropout,
        };
    }

    /// <summary>A preset, an existing folder or config.json, or a repo id whose snapshot (with config.json) is in the Hub
    /// cache: looked up offline, since the user asked to plan, not to fetch the base.</summary>
    static string ResolveBase(string folder, string baseName)
    {
        if (Presets.Names.Contains(baseName, StringComparer.OrdinalIgnoreCase) || File.Exists(baseName) || Directory.Exists(baseName)) return baseName;
        // A relative path is looked up from the working directory, as PEFT's AutoPeftModel looks it up (train records
        // --model as given).
        string cause = Path.IsPathRooted(baseName) ? "no such folder"
            : baseName.StartsWith('.') || baseName.Count(c => c == '/') > 1
                ? $"no such folder under the working directory {Environment.CurrentDirectory}; a relative path is found from the folder training ran in"
                : "no preset, folder or Hugging Face repo id";
        if (RepoId.TryParse(baseName, out var repo))
        {
            try { return ModelLocation.Download(repo, HubOptions.FromEnvironment() with { Offline = true, OfflineCause = "peft plan never downloads" }, only: f => f == "config.json"); }
            catch (Exception e) when (e is HubException or IOException) { cause = e.Message; }
        }
        throw new PlanException(Flag, $"adapter folder '{folder}' names base '{baseName}' (base_model_name_or_path), which is not found ({cause}); " +
            "download it (peft download) or pass the base as --model with the adapter's flags");
    }
}
