using System.Globalization;
using PeftSharp.Models;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Cli;

/// <summary>
/// The --adapter flags of logits/generate/eval/merge: DIR, DIR:WEIGHT or NAME=DIR[:WEIGHT], repeatable. Each folder is
/// loaded by its peft_type through the method registry (<see cref="PeftMethods"/>): LoRA/DoRA adapters combine with
/// weights; a Houlsby adapter or a soft prompt (one of each at most) applies itself inside the forward.
/// </summary>
public static class AdapterCli
{
    public sealed record Spec(string Name, string Dir, double Weight);

    /// <summary>What was applied: the LoRA specs (weighted together), the other adapters' specs, and every loaded adapter by spec.</summary>
    public sealed record Applied(IReadOnlyList<Spec> Lora, IReadOnlyList<Spec> Other, IReadOnlyList<(Spec Spec, IPeftAdapter Adapter)> Adapters)
    {
        /// <summary>The first adapter that cannot be merged into the weights, with why (merge and GGUF export refuse it).</summary>
        public (Spec Spec, string Reason)? Unmergeable =>
            Adapters.FirstOrDefault(a => a.Adapter.CannotMergeReason is not null) is { Adapter: not null } a ? (a.Spec, a.Adapter.CannotMergeReason!) : null;

        /// <summary>
        /// Folds every applied adapter into the weights through its own method (<see cref="IPeftAdapter.MergeAndUnload"/>:
        /// a LoRA adapter at the weight it was applied with), so a registered method that can merge is merged by `merge`
        /// and `export gguf` without their knowing it. Call after <see cref="Unmergeable"/> is null.
        /// </summary>
        public void MergeAndUnload()
        {
            foreach (var (_, adapter) in Adapters) adapter.MergeAndUnload();
        }
    }

    /// <summary>Loads every adapter; LoRA adapters are activated together, each with its weight.</summary>
    public static Applied Apply(CausalLM model, IReadOnlyList<string> adapterSpecs, bool allowBaseMismatch)
    {
        var specs = Parse(adapterSpecs);
        var byMethod = specs.Select(s => (Spec: s, Method: PeftMethods.ForFolder(s.Dir))).ToList();
        foreach (var group in byMethod.Where(x => x.Method is not LoraMethod).GroupBy(x => x.Method))
        {
            var of = group.Select(x => x.Spec).ToList();
            string kind = group.Key.PeftType;
            if (of.Count > 1) throw new ArgumentException($"--adapter: {of.Count} {kind} adapters given ({string.Join(", ", of.Select(s => s.Dir))}); only one of this kind can be applied");
            if (of.FirstOrDefault(s => s.Weight != 1.0) is { } w) throw new ArgumentException($"--adapter '{w.Dir}': a {kind} adapter cannot be weighted (got {w.Weight})");
        }
        var load = new AdapterLoadOptions { AllowBaseMismatch = allowBaseMismatch };
        var loaded = byMethod.Select(x => (x.Spec, x.Method.Load(model, x.Spec.Dir, x.Spec.Name, load))).ToList();
        var lora = byMethod.Where(x => x.Method is LoraMethod).Select(x => x.Spec).ToList();
        if (lora.Count > 0) LoraModel.Of(model).SetActive(lora.Select(s => (s.Name, s.Weight)));
        return new Applied(lora, byMethod.Where(x => x.Method is not LoraMethod).Select(x => x.Spec).ToList(), loaded);
    }

    public static IReadOnlyList<Spec> Parse(IReadOnlyList<string> adapterSpecs)
    {
        var result = new List<Spec>();
        foreach (var raw in adapterSpecs)
        {
            string rest = raw;
            string? name = null;
            int eq = rest.IndexOf('=');
            if (eq > 0 && !rest[..eq].Contains('/')) { name = rest[..eq]; rest = rest[(eq + 1)..]; }
            double weight = 1.0;
            int colon = rest.LastIndexOf(':');
            if (colon > 0 && double.TryParse(rest[(colon + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out var w) && !Directory.Exists(rest))
            {
                weight = w;
                rest = rest[..colon];
            }
            if (!double.IsFinite(weight)) throw new ArgumentException($"--adapter '{raw}': the weight must be a finite number, got {weight}");
            if (rest.Length == 0) throw new ArgumentException($"--adapter '{raw}': no folder given");
            // Named before resolving: a repo id ORG/NAME gives NAME, not its snapshot's commit hash.
            name ??= adapterSpecs.Count == 1 ? "default" : Path.GetFileName(Path.GetFullPath(Directory.Exists(rest) ? rest : rest.Split('@')[0]).TrimEnd('/'));
            rest = HubCli.ResolveFolder(rest, $"--adapter '{raw}'");
            string unique = name;
            for (int i = 2; result.Any(s => s.Name == unique); i++) unique = $"{name}_{i}";
            result.Add(new Spec(unique, rest, weight));
        }
        return result;
    }
}
