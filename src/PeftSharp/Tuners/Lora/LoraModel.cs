using System.Runtime.CompilerServices;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// The LoRA adapters of one model (PEFT's LoraModel): load several named adapters, choose the active ones,
/// disable all, delete, merge into the base and unmerge.
/// </summary>
internal sealed class LoraModel
{
    static readonly ConditionalWeakTable<CausalLM, LoraModel> Registry = new();

    readonly CausalLM _model;
    readonly Dictionary<string, LoraAdapter> _adapters = new();
    readonly Dictionary<string, double> _mergedWeights = new();

    LoraModel(CausalLM model) => _model = model;

    public static LoraModel Of(CausalLM model) => Registry.GetValue(model, m => new LoraModel(m));

    public IReadOnlyDictionary<string, LoraAdapter> Adapters => _adapters;
    public IReadOnlyCollection<string> Merged => _mergedWeights.Keys;
    AdapterState State => _model.State;

    public LoraAdapter Get(string name) => _adapters.TryGetValue(name, out var a) ? a
        : throw new KeyNotFoundException($"no adapter named '{name}' (loaded: {string.Join(", ", _adapters.Keys.DefaultIfEmpty("none"))})");

    internal void Register(LoraAdapter adapter) => _adapters.Add(adapter.Name, adapter);

    /// <summary>Only these adapters run, each with weight 1.</summary>
    public void SetActive(params string[] names) => SetActive(names.Select(n => (n, 1.0)));

    /// <summary>Only these adapters run, each scaled by its weight (0.5 = half of its effect).</summary>
    public void SetActive(IEnumerable<(string Name, double Weight)> active)
    {
        var list = active.ToList();
        foreach (var (n, _) in list) Get(n);
        State.Active.Clear();
        State.Active.AddRange(list);
        State.Disabled = false;
    }

    /// <summary>Base model only; adapters stay loaded (PEFT's disable_adapter).</summary>
    public void DisableAll() => State.Disabled = true;
    public void EnableAll() => State.Disabled = false;

    public void Delete(string name)
    {
        var a = Get(name);
        if (_mergedWeights.ContainsKey(name)) throw new InvalidOperationException($"adapter '{name}' is merged; unmerge it before deleting");
        foreach (var lin in _model.Linears()) lin.Adapters.Remove(name);
        foreach (var l in a.Layers.Values) l.Dispose();
        _adapters.Remove(name);
        State.Active.RemoveAll(x => x.Name == name);
    }

    /// <summary>
    /// Folds the adapter into the base weights (zero inference overhead): W ← W + w·(f(W) − W), w its active weight.
    /// The adapter is skipped by the forward while merged; <see cref="Unmerge"/> restores W.
    /// </summary>
    public void Merge(string name)
    {
        var a = Get(name);
        int active = State.Active.FindIndex(x => x.Name == name);
        double weight = active >= 0 ? State.Active[active].Weight : 1.0;
        if (_mergedWeights.ContainsKey(name)) throw new InvalidOperationException($"adapter '{name}' is already merged");
        var layers = LinearsOf(a);
        foreach (var (lin, _) in layers)
        {
            if (lin.Quantized is not null) throw new InvalidOperationException($"{lin.ModulePath}: cannot merge into a quantised base; load the model dense to merge");
            if (lin.MergedAdapter is not null) throw new InvalidOperationException($"{lin.ModulePath}: adapter '{lin.MergedAdapter}' is already merged; unmerge it first");
        }
        using var _ = no_grad();
        foreach (var (lin, layer) in layers)
        {
            using var scope = NewDisposeScope();
            var merged = layer.MergedWeight(lin.weight!);
            lin.DropPacked();   // the weight changes in place: a packed copy would be stale
            lin.weight!.copy_(weight == 1.0 ? merged : lin.weight!.Plus((merged - lin.weight!).Times(weight)));
            lin.MergedAdapter = name;
        }
        _mergedWeights[name] = weight;
    }

    public void Unmerge(string name)
    {
        var a = Get(name);
        if (!_mergedWeights.TryGetValue(name, out double weight)) throw new InvalidOperationException($"adapter '{name}' is not merged");
        if (weight != 1.0 && a.Config.UseDora) throw new NotSupportedException($"adapter '{name}': a DoRA adapter merged with weight {weight} cannot be unmerged");
        using var _ = no_grad();
        foreach (var (lin, layer) in LinearsOf(a))
        {
            using var scope = NewDisposeScope();
            var restored = layer.UnmergedWeight(lin.weight!);
            lin.DropPacked();
            // LoRA is linear in its delta, so a weighted merge is undone by the weighted delta.
            lin.weight!.copy_(weight == 1.0 ? restored : lin.weight!.Plus((restored - lin.weight!).Times(weight)));
            lin.MergedAdapter = null;
        }
        _mergedWeights.Remove(name);
    }

    /// <summary>Merges permanently and removes the adapter (PEFT's merge_and_unload for one adapter).</summary>
    public void MergeAndUnload(string name)
    {
        Merge(name);
        foreach (var (lin, _) in LinearsOf(Get(name))) lin.MergedAdapter = null;
        _mergedWeights.Remove(name);
        Delete(name);
    }

    List<(TunableLinear Lin, LoraLayer Layer)> LinearsOf(LoraAdapter a)
    {
        var byPath = _model.Linears().ToDictionary(l => l.ModulePath);
        return a.Layers.Select(kv => (byPath[kv.Key], kv.Value)).ToList();
    }
}
