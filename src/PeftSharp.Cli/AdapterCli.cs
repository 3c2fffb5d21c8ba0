using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using PeftSharp.Tuners.Houlsby;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.PromptTuning;
using static TorchSharp.torch;

namespace PeftSharp.Cli;

/// <summary>
/// The --adapter flags of logits/generate/eval/merge: DIR, DIR:WEIGHT or NAME=DIR[:WEIGHT], repeatable. Each folder is
/// loaded by its peft_type: LoRA/DoRA (PEFT's LORA, several combine with weights), Houlsby adapters
/// (PEFTSHARP_HOULSBY) or a soft prompt (PROMPT_TUNING); at most one of each of the last two.
/// </summary>
public static class AdapterCli
{
    public sealed record Spec(string Name, string Dir, double Weight);

    public enum Kind { Lora, Houlsby, Prompt }

    /// <summary>What was applied. <see cref="Method"/> carries the forward a soft prompt needs (null otherwise).</summary>
    public sealed record Applied(IReadOnlyList<Spec> Lora, Spec? Houlsby, Spec? Prompt, PromptTraining? PromptMethod)
    {
        public ITrainingMethod? Method => PromptMethod;
        /// <summary>Logits for the real tokens [B, T, V], the soft prompt prepended when there is one.</summary>
        public Tensor Logits(CausalLM model, Tensor ids, Tensor? attentionMask = null) =>
            PromptMethod is { } p ? p.Forward(model, ids, attentionMask) : model.Forward(ids, attentionMask: attentionMask);
        /// <summary>[1, N, H] embeddings to put before a generation prompt, or null.</summary>
        public Tensor? GenerationPrefix => PromptMethod?.GenerationPrefix?.unsqueeze(0);
    }

    /// <summary>Loads every adapter; LoRA adapters are activated together, each with its weight.</summary>
    public static Applied Apply(CausalLM model, IReadOnlyList<string> adapterSpecs, bool allowBaseMismatch)
    {
        var specs = Parse(adapterSpecs);
        var byKind = specs.Select(s => (Spec: s, Kind: KindOf(s.Dir))).ToList();
        foreach (var k in new[] { Kind.Houlsby, Kind.Prompt })
        {
            var of = byKind.Where(x => x.Kind == k).Select(x => x.Spec).ToList();
            if (of.Count > 1) throw new ArgumentException($"--adapter: {of.Count} {k} adapters given ({string.Join(", ", of.Select(s => s.Dir))}); only one of this kind can be applied");
            if (of.FirstOrDefault(s => s.Weight != 1.0) is { } w) throw new ArgumentException($"--adapter '{w.Dir}': a {k} adapter cannot be weighted (got {w.Weight})");
        }
        var lora = byKind.Where(x => x.Kind == Kind.Lora).Select(x => x.Spec).ToList();
        foreach (var s in lora) PeftAdapterIO.Load(model, s.Dir, s.Name, allowBaseMismatch);
        if (lora.Count > 0) LoraModel.Of(model).SetActive(lora.Select(s => (s.Name, s.Weight)));
        var houlsby = byKind.Where(x => x.Kind == Kind.Houlsby).Select(x => x.Spec).SingleOrDefault();
        if (houlsby is not null) HoulsbyAdapters.Load(model, houlsby.Dir);
        var prompt = byKind.Where(x => x.Kind == Kind.Prompt).Select(x => x.Spec).SingleOrDefault();
        var promptMethod = prompt is null ? null : new PromptTraining(model, PromptEmbeddings.Load(model, prompt.Dir));
        return new Applied(lora, houlsby, prompt, promptMethod);
    }

    /// <summary>The adapter kind of a folder, from adapter_config.json's peft_type (required, as PEFT requires it).</summary>
    public static Kind KindOf(string dir)
    {
        string path = Path.Combine(dir, PeftAdapterIO.ConfigFile);
        if (!File.Exists(path))
            throw new FileNotFoundException(File.Exists(Path.Combine(dir, "config.json"))
                ? $"{dir}: a full model folder (full fine-tuning saves one), not an adapter; pass it as --model" : $"{path}: not found (not an adapter folder)", path);
        var json = JsonFile.ReadObject(path);
        string? type = json["peft_type"] is JsonValue v && v.TryGetValue<string>(out var t) ? t : null;
        return type switch
        {
            null => throw LoraConfig.MissingPeftType(path),
            "LORA" => Kind.Lora,
            HoulsbyConfig.PeftType => Kind.Houlsby,
            "PROMPT_TUNING" => Kind.Prompt,
            _ => throw new InvalidDataException($"{path}: peft_type '{type}' is not supported (LORA, PROMPT_TUNING, {HoulsbyConfig.PeftType})"),
        };
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
