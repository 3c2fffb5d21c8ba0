using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using Fingerprint = PeftSharp.IO.BaseFingerprint;

namespace PeftSharp.Serving.Adapters;

/// <summary>
/// PEFT LoRA/DoRA folders through <see cref="PeftAdapterIO"/>. Before touching the model it refuses, as a mismatch,
/// an adapter whose recorded base fingerprint (weights, architecture, quantisation) differs from the served base or
/// whose target_modules match no module of it. The base's fingerprint over all its projections is computed once.
/// </summary>
public sealed class PeftAdapterLoader : IAdapterLoader
{
    Fingerprint? _base;

    Fingerprint Base(CausalLM model) => _base ??= Fingerprint.Compute(model, model.Linears().Select(l => l.ModulePath));

    /// <summary>
    /// The digest an adapter records depends on the modules it adapts (<see cref="Fingerprint.Restrict"/>). Shown is
    /// the one `peft train`'s default targets (all-linear: every projection but the output head) record, so an adapter
    /// trained on this base shows the same value; the full fingerprint, lm_head included, stays the one compared.
    /// </summary>
    public string BaseFingerprint(CausalLM model) =>
        Base(model).Restrict(LoraInjector.Targets(model, new LoraConfig { TargetModulesRegex = "all-linear" }).Select(l => l.ModulePath)).Digest;

    /// <summary>Loads a PEFT LoRA/DoRA folder after checking it fits the served base (see the class summary).</summary>
    /// <exception cref="AdapterMismatchException">Another base, or no module of this one targeted.</exception>
    /// <exception cref="NotSupportedException">An adapter of another kind (prompt tuning, Houlsby), which cannot be
    /// batched with others.</exception>
    public AdapterInfo Load(CausalLM model, string folder, string internalName)
    {
        // Whatever the folder holds is named through the method registry; rows of one batch switch LoRA adapters only.
        if (PeftMethods.ForFolder(folder) is not LoraMethod)
            throw new NotSupportedException($"{Path.Combine(folder, AdapterFolderFiles.ConfigFile)}: a {PeftMethods.ForFolder(folder).PeftType} adapter cannot be served " +
                "(the server batches requests for different adapters together, which only LoRA/DoRA adapters allow); use `peft generate --adapter` for it");
        var adapter = PeftAdapterIO.Read(folder);
        // PiSSA replaces the base weights it adapts by their residual (as PEFT's pissa_init does on load): on a shared
        // base that would silently change the base model's answers and every other adapter's.
        if (adapter.Config.IsPissa)
            throw new NotSupportedException($"{Path.Combine(folder, AdapterFolderFiles.ConfigFile)}: a PiSSA adapter (init_lora_weights \"pissa\") " +
                "rewrites the base weights it adapts, which the served base shares with every adapter; serve `peft merge`'s output of it instead");
        var full = Base(model);
        if (adapter.RecordedBase is { } recorded)
        {
            var diff = recorded.Differences(full.Restrict(recorded.ModulePaths));
            if (diff.Count > 0)
                throw new AdapterMismatchException($"{diff.Count} difference(s): {string.Join("; ", diff.Take(8))}{(diff.Count > 8 ? "; ..." : "")}{Hint(recorded.Scheme, full.Scheme)}");
        }
        try { LoraInjector.Targets(model, adapter.Config); }
        catch (ArgumentException e) { throw new AdapterMismatchException(e.Message); }
        CheckShapes(model, adapter.Dir);
        // The IO compares against the cached fingerprint too (a dictionary lookup), so no weight is hashed again.
        PeftAdapterIO.Load(model, adapter, internalName, knownBase: full);
        return new AdapterInfo(adapter.Config.R, adapter.RecordedBase?.Digest, adapter.Config.UseDora ? "dora" : "lora");
    }

    /// <summary>Deletes the adapter from the model's LoRA layers.</summary>
    public void Unload(CausalLM model, string internalName) => LoraModel.Of(model).Delete(internalName);

    /// <summary>
    /// An adapter with no recorded fingerprint (as Python PEFT writes them) made for a base of other dimensions or
    /// depth is a base mismatch (409), not a malformed request: its A/B matrices name modules the served base lacks or
    /// do not fit their in/out features. Unreadable files are left to <see cref="PeftAdapterIO"/> to report.
    /// </summary>
    static void CheckShapes(CausalLM model, string dir)
    {
        string weights = Path.Combine(dir, AdapterFolderFiles.WeightsFile);
        if (!File.Exists(weights)) return;
        SafeTensorsFile file;
        try { file = new SafeTensorsFile(weights); }
        catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or UnauthorizedAccessException) { return; }
        using (file)
        {
            var modules = model.Linears().ToDictionary(l => l.ModulePath);
            foreach (var t in file.Tensors)
            {
                int a = t.Name.IndexOf(".lora_A.", StringComparison.Ordinal), b = t.Name.IndexOf(".lora_B.", StringComparison.Ordinal);
                int at = a >= 0 ? a : b;
                if (at < 0 || !t.Name.StartsWith(PeftKeys.Prefix, StringComparison.Ordinal) || t.Shape.Length != 2) continue;
                string module = t.Name[PeftKeys.Prefix.Length..at];
                if (!modules.TryGetValue(module, out var lin))
                    throw new AdapterMismatchException($"tensor '{t.Name}' adapts '{module}', which the served base does not have");
                long want = a >= 0 ? lin.InFeatures : lin.OutFeatures, got = a >= 0 ? t.Shape[1] : t.Shape[0];
                if (want != got)
                    throw new AdapterMismatchException($"tensor '{t.Name}' has shape [{string.Join(", ", t.Shape)}]: made for a module with " +
                        $"{(a >= 0 ? "in" : "out")}_features {got}, the served base's '{module}' has {want}");
            }
        }
    }

    // One served base is shared by every adapter, so it is not re-quantised per adapter (generate/eval/merge do that
    // for their single adapter); say which base to serve instead.
    static string Hint(string trainedOn, string served) => (trainedOn, served) switch
    {
        (_, _) when trainedOn == served => "",
        (_, "none") => $". The adapter was trained on a {trainedOn} base: serve that (`peft quantize --model BASE --out DIR`, then `peft serve --model DIR`)",
        ("none", _) => $". The adapter was trained on the dense base, and this server's base is {served}: serve the dense base",
        _ => "",
    };
}
