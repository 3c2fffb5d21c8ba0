using System.Globalization;
using System.Text.Json;
using PeftSharp.IO;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>
/// The parts every AdamW variant shares: named parameters, per-parameter step counters, state kept in an
/// <see cref="IStateStore"/>, and save/restore keyed by parameter name. Variants differ only in which state
/// slots a parameter gets and how one parameter is updated.
/// </summary>
internal abstract class AdamWBase : IOptimizer
{
    const string FormatTag = "peftsharp-optimizer-v1";

    protected sealed class Entry(string name, Parameter param, StateSlot[] slots)
    {
        public string Name { get; } = name;
        public Parameter Param { get; } = param;
        public StateSlot[] Slots { get; } = slots;
        public Tensor[] Homes { get; set; } = [];
        public long Step { get; set; }
    }

    readonly List<Entry> _entries;
    readonly IStateStore _store;
    bool _disposed;

    public AdamWOptions Options { get; }
    public double LearningRate { get; set; }
    public long StateBytes => Entries.Sum(e => e.Slots.Sum(s => s.Bytes));

    /// <summary>State bytes held in the compute device's working memory at once (all of it unless paged).</summary>
    public long ResidentStateBytes { get { EnsureInitialized(); return _store.ResidentBytes; } }

    /// <summary>The name written into saved state; loading refuses state of another kind.</summary>
    protected abstract string Kind { get; }

    /// <summary>The state tensors a parameter needs.</summary>
    protected abstract StateSlot[] SlotsFor(Parameter p);

    /// <summary>Updates <paramref name="param"/> and its <paramref name="state"/> (slot order) in place; called under no_grad.</summary>
    protected abstract void Update(Tensor param, Tensor grad, Tensor[] state, long step);

    protected AdamWBase(IReadOnlyList<(string Name, Parameter Param)> parameters, AdamWOptions options, IStateStore? store)
    {
        options.Validate();
        Options = options;
        LearningRate = options.LearningRate;
        var seen = new HashSet<string>();
        foreach (var (name, p) in parameters)
        {
            if (string.IsNullOrEmpty(name)) throw new ArgumentException("optimiser parameter with an empty name");
            if (!seen.Add(name)) throw new ArgumentException($"optimiser parameter '{name}' is listed twice");
            if (p is null) throw new ArgumentException($"optimiser parameter '{name}' is null");
        }
        _store = store ?? new DeviceStateStore();
        // State is allocated on first use (EnsureInitialized), after derived constructors have run.
        _entries = new List<Entry>();
        _pending = parameters;
    }

    IReadOnlyList<(string Name, Parameter Param)>? _pending;

    void EnsureInitialized()
    {
        if (_pending is null) return;
        foreach (var (name, p) in _pending) _entries.Add(new Entry(name, p, SlotsFor(p)));
        var homes = _store.Allocate(_entries.Select(e => (e.Slots, e.Param.device)).ToList());
        for (int i = 0; i < _entries.Count; i++) _entries[i].Homes = homes[i];
        _pending = null;
    }

    protected IReadOnlyList<Entry> Entries { get { EnsureInitialized(); return _entries; } }

    public void Step()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var noGrad = no_grad();
        foreach (var e in Entries)
        {
            using var scope = NewDisposeScope();
            var grad = e.Param.grad;
            if (grad is null) continue;
            e.Step++;
            var working = _store.Fetch(e.Homes, e.Param.device);
            Update(e.Param, grad, working, e.Step);
            _store.Commit(e.Homes, working);
        }
    }

    public void ZeroGrad()
    {
        using var scope = NewDisposeScope(); // in-place ops hand back new wrappers
        foreach (var e in Entries) e.Param.grad?.zero_();
    }

    public void SaveState(string path)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var entries = Entries;
        var tensors = new List<SafeTensorEntry>();
        foreach (var e in entries)
            for (int j = 0; j < e.Slots.Length; j++)
                tensors.Add(SafeTensorEntry.FromTensor($"{e.Name}.{e.Slots[j].Name}", e.Homes[j]));
        var steps = entries.ToDictionary(e => e.Name, e => e.Step);
        var meta = new Dictionary<string, string>
        {
            ["format"] = FormatTag,
            ["optimizer"] = Kind,
            ["lr"] = LearningRate.ToString("R", CultureInfo.InvariantCulture),
            ["options"] = JsonSerializer.Serialize(Options),
            ["steps"] = JsonSerializer.Serialize(steps),
        };
        SafeTensorsWriter.Write(path, tensors, meta);
    }

    public void LoadState(string path)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var entries = Entries;
        using var file = new SafeTensorsFile(path);
        string Fail(string why) => $"{path}: optimiser state does not fit this optimiser: {why}";
        if (file.Metadata.GetValueOrDefault("format") != FormatTag)
            throw new InvalidDataException($"{path}: not a PeftSharp optimiser state file (metadata 'format' is not '{FormatTag}')");
        string kind = file.Metadata.GetValueOrDefault("optimizer") ?? "?";
        if (kind != Kind) throw new InvalidDataException(Fail($"it was saved by {kind}, this is {Kind}"));
        Dictionary<string, long> steps;
        try { steps = JsonSerializer.Deserialize<Dictionary<string, long>>(file.Metadata.GetValueOrDefault("steps") ?? "") ?? new(); }
        catch (JsonException ex) { throw new InvalidDataException($"{path}: metadata 'steps' is not valid ({ex.Message})"); }

        var ours = entries.Select(e => e.Name).ToHashSet();
        var missing = ours.Where(n => !steps.ContainsKey(n)).ToList();
        var extra = steps.Keys.Where(n => !ours.Contains(n)).ToList();
        if (missing.Count > 0 || extra.Count > 0)
            throw new InvalidDataException(Fail(
                (missing.Count > 0 ? $"no state for parameter(s) {string.Join(", ", missing.Take(5).Select(n => $"'{n}'"))}{(missing.Count > 5 ? " ..." : "")}" : "")
                + (missing.Count > 0 && extra.Count > 0 ? "; " : "")
                + (extra.Count > 0 ? $"state for unknown parameter(s) {string.Join(", ", extra.Take(5).Select(n => $"'{n}'"))}{(extra.Count > 5 ? " ..." : "")}" : "")));
        foreach (var e in entries)
            foreach (var s in e.Slots)
            {
                string key = $"{e.Name}.{s.Name}";
                if (!file.Contains(key)) throw new InvalidDataException(Fail($"tensor '{key}' is missing"));
                var info = file.Info(key);
                string dt = SafeTensorDtype.FromScalarType(s.Dtype);
                if (info.Dtype != dt || !info.Shape.SequenceEqual(s.Shape))
                    throw new InvalidDataException(Fail(
                        $"tensor '{key}' is {info.Dtype}[{string.Join(", ", info.Shape)}], parameter '{e.Name}' needs {dt}[{string.Join(", ", s.Shape)}]"));
            }

        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        foreach (var e in entries)
        {
            for (int j = 0; j < e.Slots.Length; j++)
            {
                using var t = file.Load($"{e.Name}.{e.Slots[j].Name}");
                e.Homes[j].copy_(t);
            }
            e.Step = steps[e.Name];
        }
        if (double.TryParse(file.Metadata.GetValueOrDefault("lr"), NumberStyles.Float, CultureInfo.InvariantCulture, out double lr))
            LearningRate = lr;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _store.Dispose();
        GC.SuppressFinalize(this);
    }
}
