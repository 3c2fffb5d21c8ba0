using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>State kept on each parameter's own device: the ordinary, fastest layout.</summary>
internal sealed class DeviceStateStore : IStateStore
{
    readonly List<Tensor> _owned = new();

    public long ResidentBytes { get; private set; }

    public Tensor[][] Allocate(IReadOnlyList<(StateSlot[] Slots, Device Device)> parameters)
    {
        var result = new Tensor[parameters.Count][];
        for (int i = 0; i < parameters.Count; i++)
        {
            var (slots, device) = parameters[i];
            result[i] = slots.Select(s =>
            {
                var t = zeros(s.Shape, s.Dtype, device).DetachFromDisposeScope();
                _owned.Add(t);
                ResidentBytes += s.Bytes;
                return t;
            }).ToArray();
        }
        return result;
    }

    public Tensor[] Fetch(Tensor[] homes, Device device) => homes;

    public void Commit(Tensor[] homes, Tensor[] working) { }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }
}
