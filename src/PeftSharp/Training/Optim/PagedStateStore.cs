using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>
/// Optimiser state kept outside the compute device's working memory: in memory-mapped files (one per state
/// dtype, under <see cref="Directory"/>) that the OS can page out to disk. Before each parameter's update its
/// state is brought in: on CPU by touching the mapping itself (the update runs on views over it, so only one
/// parameter's state pages are needed at a time); on another device, or with <c>stage</c>, by copying into a
/// reusable device scratch buffer sized to the largest parameter's state and copying back after the update.
/// The files are scratch space, deleted on Dispose; checkpoints go through the optimiser's SaveState.
/// </summary>
internal sealed class PagedStateStore : IStateStore
{
    readonly bool _stage;
    readonly List<Tensor> _owned = new();
    readonly List<string> _files = new();
    readonly Dictionary<(ScalarType, string), Tensor> _scratch = new();
    readonly Dictionary<ScalarType, long> _maxScratchElements = new();

    public string Directory { get; }
    public IReadOnlyList<string> Files => _files;
    public long ResidentBytes { get; private set; }

    /// <param name="directory">Folder for the state files (created if needed).</param>
    /// <param name="stage">Copy state into a device scratch buffer even on CPU (the path CUDA takes).</param>
    public PagedStateStore(string directory, bool stage = false)
    {
        Directory = directory;
        _stage = stage;
        System.IO.Directory.CreateDirectory(directory);
    }

    public Tensor[][] Allocate(IReadOnlyList<(StateSlot[] Slots, Device Device)> parameters)
    {
        if (_owned.Count > 0) throw new InvalidOperationException("PagedStateStore: state is already allocated");
        // Lay out every slot of one dtype back to back (64-byte aligned) in that dtype's file.
        var offsets = new long[parameters.Count][];
        var totals = new Dictionary<ScalarType, long>();
        for (int i = 0; i < parameters.Count; i++)
        {
            var slots = parameters[i].Slots;
            offsets[i] = new long[slots.Length];
            var perParam = new Dictionary<ScalarType, long>();
            for (int j = 0; j < slots.Length; j++)
            {
                var s = slots[j];
                long align = Math.Max(1, 64 / StateSlot.ElementSize(s.Dtype));
                long at = totals.GetValueOrDefault(s.Dtype);
                at = (at + align - 1) / align * align;
                offsets[i][j] = at;
                totals[s.Dtype] = at + s.ElementCount;
                perParam[s.Dtype] = perParam.GetValueOrDefault(s.Dtype) + s.ElementCount;
            }
            foreach (var (dt, n) in perParam)
                _maxScratchElements[dt] = Math.Max(_maxScratchElements.GetValueOrDefault(dt), n);
            ResidentBytes = Math.Max(ResidentBytes, slots.Sum(s => s.Bytes));
        }

        var bases = new Dictionary<ScalarType, Tensor>();
        foreach (var (dt, n) in totals)
        {
            if (n == 0) continue;
            string path = Path.Combine(Directory, $"optimizer-state.{dt.ToString().ToLowerInvariant()}.bin");
            using (var fs = new FileStream(path, FileMode.Create, FileAccess.ReadWrite))
                fs.SetLength(n * StateSlot.ElementSize(dt)); // sparse, reads as zeros
            _files.Add(path);
            var b = from_file(path, shared: true, size: n, dtype: dt).DetachFromDisposeScope();
            _owned.Add(b);
            bases[dt] = b;
        }

        var result = new Tensor[parameters.Count][];
        for (int i = 0; i < parameters.Count; i++)
        {
            var slots = parameters[i].Slots;
            result[i] = new Tensor[slots.Length];
            for (int j = 0; j < slots.Length; j++)
            {
                if (slots[j].ElementCount == 0)
                {
                    result[i][j] = empty(slots[j].Shape, slots[j].Dtype).DetachFromDisposeScope();
                    _owned.Add(result[i][j]);
                    continue;
                }
                using var flat = bases[slots[j].Dtype].narrow(0, offsets[i][j], slots[j].ElementCount);
                var view = flat.view(slots[j].Shape).DetachFromDisposeScope();
                _owned.Add(view);
                result[i][j] = view;
            }
        }
        return result;
    }

    public Tensor[] Fetch(Tensor[] homes, Device device)
    {
        if (!_stage && device.type == DeviceType.CPU) return homes;
        var used = new Dictionary<ScalarType, long>();
        var working = new Tensor[homes.Length];
        for (int j = 0; j < homes.Length; j++)
        {
            var h = homes[j];
            long at = used.GetValueOrDefault(h.dtype), n = h.NumberOfElements;
            used[h.dtype] = at + n;
            using var flat = Scratch(h.dtype, device).narrow(0, at, n);
            working[j] = flat.view(h.shape).copy_(h);
        }
        return working;
    }

    public void Commit(Tensor[] homes, Tensor[] working)
    {
        for (int j = 0; j < homes.Length; j++)
            if (!ReferenceEquals(homes[j], working[j])) homes[j].copy_(working[j]);
    }

    Tensor Scratch(ScalarType dt, Device device)
    {
        var key = (dt, device.ToString());
        if (!_scratch.TryGetValue(key, out var s))
        {
            s = empty(_maxScratchElements[dt], dt, device).DetachFromDisposeScope();
            _scratch[key] = s;
        }
        return s;
    }

    public void Dispose()
    {
        foreach (var t in _scratch.Values) t.Dispose();
        _scratch.Clear();
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
        foreach (var f in _files)
            try { File.Delete(f); } catch (IOException) { }
        _files.Clear();
    }
}
