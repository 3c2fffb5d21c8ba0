using System.Globalization;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Cli;

/// <summary>The --adapter flags of logits/generate/merge: DIR, DIR:WEIGHT or NAME=DIR[:WEIGHT], repeatable.</summary>
public static class AdapterCli
{
    public sealed record Spec(string Name, string Dir, double Weight);

    /// <summary>Loads every adapter and activates them together, each with its weight. Returns the active list.</summary>
    public static IReadOnlyList<Spec> Apply(CausalLM model, IReadOnlyList<string> adapterSpecs, bool allowBaseMismatch)
    {
        var specs = Parse(adapterSpecs);
        foreach (var s in specs) PeftAdapterIO.Load(model, s.Dir, s.Name, allowBaseMismatch);
        if (specs.Count > 0) LoraModel.Of(model).SetActive(specs.Select(s => (s.Name, s.Weight)));
        return specs;
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
            if (rest.Length == 0) throw new ArgumentException($"--adapter '{raw}': no folder given");
            if (!Directory.Exists(rest)) throw new DirectoryNotFoundException($"--adapter '{raw}': folder '{rest}' not found");
            name ??= adapterSpecs.Count == 1 ? "default" : Path.GetFileName(Path.GetFullPath(rest).TrimEnd('/'));
            string unique = name;
            for (int i = 2; result.Any(s => s.Name == unique); i++) unique = $"{name}_{i}";
            result.Add(new Spec(unique, rest, weight));
        }
        return result;
    }
}
