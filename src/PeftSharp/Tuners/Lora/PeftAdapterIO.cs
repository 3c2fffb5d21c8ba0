using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// Hugging Face PEFT LoRA/DoRA adapter folders: adapter_config.json + adapter_model.safetensors with PEFT's key names
/// (base_model.model.&lt;module&gt;.lora_A.weight, ...). Saving is atomic (the whole folder is swapped in) and records
/// a <see cref="BaseFingerprint"/>; loading checks it. The folder's file names and the fingerprint check are the
/// format's, shared by every method (<see cref="AdapterFolderFiles"/> in IO/); this is the LoRA-aware part.
/// </summary>
internal static class PeftAdapterIO
{
    /// <param name="model">The model the LoRA adapter is attached to.</param>
    /// <param name="adapterName">Which of its LoRA adapters to save.</param>
    /// <param name="dir">The adapter folder to write (adapter_config.json + adapter_model.safetensors).</param>
    /// <param name="recordedBase">The base to record instead of the loaded model's (a 16-bit compute run records its
    /// checkpoint's fp32 fingerprint: <see cref="BaseFingerprint.OfCheckpointInFp32"/>).</param>
    /// <param name="rewriteEntries">Rewrites the tensor entries just before they are written (tests inject a failing
    /// write with it; a parameter, so a test's fault reaches only its own save).</param>
    public static void Save(CausalLM model, string adapterName, string dir, BaseFingerprint? recordedBase = null,
        Func<IEnumerable<SafeTensorEntry>, IEnumerable<SafeTensorEntry>>? rewriteEntries = null)
    {
        var adapter = LoraModel.Of(model).Get(adapterName);
        IEnumerable<SafeTensorEntry> entries = adapter.PeftNamedParameters()
            .OrderBy(p => p.Key, StringComparer.Ordinal)
            .Select(p => SafeTensorEntry.FromTensor(p.Key, p.Param))
            .ToList();
        if (rewriteEntries is not null) entries = rewriteEntries(entries);
        // PEFT's save_pretrained writes inference_mode true whatever mode the model is in (it sets it around the save).
        AdapterFolderWriter.Write(dir, (adapter.Config with { InferenceMode = true }).ToJson(),
            recordedBase?.Restrict(adapter.Layers.Keys) ?? adapter.BaseBeforeInit ?? BaseFingerprint.Compute(model, adapter.Layers.Keys), entries);
    }

    /// <summary>An adapter folder's config and the base fingerprint it records (null when it records none, as PEFT's own folders).</summary>
    public sealed record AdapterFolder(string Dir, LoraConfig Config, BaseFingerprint? RecordedBase);

    /// <summary>Reads adapter_config.json once: the LoRA config, and the recorded base fingerprint (<see cref="AdapterFolderFiles.RecordedBase"/>).</summary>
    public static AdapterFolder Read(string dir)
    {
        string path = Path.Combine(dir, AdapterFolderFiles.ConfigFile);
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"{dir}: adapter folder not found");
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: not found (not a PEFT adapter folder)", path);
        var raw = JsonFile.ReadObject(path);
        var cfg = LoraConfig.FromJson(raw, path, PeftLogging.Warn);
        return new AdapterFolder(dir, cfg, AdapterFolderFiles.RecordedBase(dir, raw));
    }

    /// <summary>
    /// Loads a PEFT LoRA/DoRA adapter folder as adapter <paramref name="name"/> and makes it the active adapter.
    /// A recorded base fingerprint must match the model unless <paramref name="allowMismatch"/> (then a warning).
    /// <paramref name="knownBase"/>, a fingerprint of this model already computed over (at least) the adapted modules,
    /// is compared instead of hashing the base weights again.
    /// </summary>
    public static LoraAdapter Load(CausalLM model, string dir, string name = "default", bool allowMismatch = false, bool trainable = false,
        BaseFingerprint? knownBase = null) => Load(model, Read(dir), name, allowMismatch, trainable, knownBase);

    /// <inheritdoc cref="Load(CausalLM, string, string, bool, bool, BaseFingerprint?)"/>
    public static LoraAdapter Load(CausalLM model, AdapterFolder folder, string name = "default", bool allowMismatch = false, bool trainable = false,
        BaseFingerprint? knownBase = null)
    {
        var (dir, cfg, recorded) = folder;
        // Beside a PiSSA adapter, the weights it adapts are their residual: an adapter trained on the base would read as
        // "saved for a different base model" (or, without a fingerprint, run on the residual: PEFT does, silently).
        if (recorded is not null && !allowMismatch && !cfg.IsPissa
            && LoraModel.Of(model).Adapters.Values.FirstOrDefault(a => a.IsPissa) is { } pissa
            && recorded.ModulePaths.FirstOrDefault(pissa.Layers.ContainsKey) is { } shared)
            throw new InvalidDataException($"{dir}: PiSSA adapter '{pissa.Name}' replaced the base weights this adapter also adapts " +
                $"({shared}, ...) by their residual; an adapter trained on the base cannot be applied beside it (apply it without '{pissa.Name}')");
        if (recorded is not null) AdapterFolderFiles.CheckBase(model, recorded, knownBase, dir, allowMismatch);

        string weights = Path.Combine(dir, AdapterFolderFiles.WeightsFile);
        if (!File.Exists(weights))
            throw new FileNotFoundException(File.Exists(Path.Combine(dir, "adapter_model.bin"))
                ? $"{dir}: only adapter_model.bin (pickle) found; convert it to {AdapterFolderFiles.WeightsFile}" : $"{weights}: not found", weights);
        using var file = OpenWeights(weights);
        var adapter = LoraInjector.Create(model, cfg, name, 0, AdapterDtype(file, model.Dtype), trainable, initialise: false, activate: false);
        try
        {
            Fill(adapter, file, weights);
        }
        catch
        {
            LoraModel.Of(model).Delete(name);
            throw;
        }
        LoraModel.Of(model).SetActive(name);
        return adapter;
    }

    static SafeTensorsFile OpenWeights(string path)
    {
        try { return new SafeTensorsFile(path); }
        catch (Exception e) when (e is not FileNotFoundException)
        {
            throw new InvalidDataException($"{path}: unreadable adapter weights, the file may be truncated or corrupt ({e.Message})", e);
        }
    }

    /// <summary>Adapters keep the dtype they were saved in (fp32 adapters on a bf16 base, as PEFT trains them).</summary>
    static ScalarType AdapterDtype(SafeTensorsFile file, ScalarType modelDtype)
    {
        var first = file.Tensors.FirstOrDefault(t => t.Name.Contains(".lora_A.", StringComparison.Ordinal));
        if (first is null) return modelDtype;
        var t = SafeTensorDtype.ToScalarType(first.Dtype);
        return t is ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float64 ? t : modelDtype;
    }

    static void Fill(LoraAdapter adapter, SafeTensorsFile file, string path)
    {
        var expected = adapter.PeftNamedParameters().ToDictionary(p => p.Key, p => p.Param);
        // PEFT also writes keys with the adapter name inside ("lora_A.default.weight") in some versions.
        string Canonical(string key) => key.Replace(".lora_A.default.", ".lora_A.").Replace(".lora_B.default.", ".lora_B.")
            .Replace(".lora_magnitude_vector.default.weight", ".lora_magnitude_vector").Replace(".lora_magnitude_vector.weight", ".lora_magnitude_vector");
        var seen = new HashSet<string>();
        using var _ = no_grad();
        foreach (var info in file.Tensors)
        {
            string key = Canonical(info.Name);
            if (!expected.TryGetValue(key, out var p))
                throw new InvalidDataException($"{path}: tensor '{info.Name}' matches no adapted module of this model (config targets {Describe(adapter.Config)})");
            if (!info.Shape.SequenceEqual(p.shape))
                throw new InvalidDataException($"{path}: tensor '{info.Name}' has shape [{string.Join(", ", info.Shape)}] but the model expects [{string.Join(", ", p.shape)}]{OtherBase(adapter.Config)}");
            using var t = file.Load(info.Name, p.dtype, p.device);
            FiniteValues.Require(t, path, info.Name);
            p.copy_(t);
            seen.Add(key);
        }
        var missing = expected.Keys.Where(k => !seen.Contains(k)).ToList();
        if (missing.Count > 0)
            throw new InvalidDataException($"{path}: missing {missing.Count} adapter tensor(s): {string.Join(", ", missing.Take(6))}{(missing.Count > 6 ? ", ..." : "")}{OtherBase(adapter.Config)}");
    }

    /// <summary>
    /// Shapes or tensors that do not fit are most often an adapter for another model (PEFT-made adapters record no
    /// fingerprint to say so first): name the base the adapter config records.
    /// </summary>
    static string OtherBase(LoraConfig c) =>
        string.IsNullOrEmpty(c.BaseModelNameOrPath) ? "" : $" (the adapter records base_model_name_or_path '{c.BaseModelNameOrPath}': is this model its base?)";

    static string Describe(LoraConfig c) => c.TargetModules is { } l ? $"[{string.Join(", ", l)}]" : $"'{c.TargetModulesRegex}'";
}
