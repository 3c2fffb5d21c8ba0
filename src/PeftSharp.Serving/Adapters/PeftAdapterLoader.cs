using PeftSharp.IO;
using PeftSharp.Models;
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

    public string BaseFingerprint(CausalLM model) => Base(model).Digest;

    public AdapterInfo Load(CausalLM model, string folder, string internalName)
    {
        var adapter = PeftAdapterIO.Read(folder);
        var full = Base(model);
        if (adapter.RecordedBase is { } recorded)
        {
            var diff = recorded.Differences(full.Restrict(recorded.ModulePaths));
            if (diff.Count > 0)
                throw new AdapterMismatchException($"{diff.Count} difference(s): {string.Join("; ", diff.Take(8))}{(diff.Count > 8 ? "; ..." : "")}{Hint(recorded.Scheme, full.Scheme)}");
        }
        try { LoraInjector.Targets(model, adapter.Config); }
        catch (ArgumentException e) { throw new AdapterMismatchException(e.Message); }
        // The IO compares against the cached fingerprint too (a dictionary lookup), so no weight is hashed again.
        PeftAdapterIO.Load(model, adapter, internalName, knownBase: full);
        return new AdapterInfo(adapter.Config.R, adapter.RecordedBase?.Digest, adapter.Config.UseDora ? "dora" : "lora");
    }

    public void Unload(CausalLM model, string internalName) => LoraModel.Of(model).Delete(internalName);

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
