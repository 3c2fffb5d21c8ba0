using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>
/// Where optimiser state lives. The optimiser asks for the state of one parameter before updating it
/// (<see cref="Fetch"/>), updates the returned tensors in place on the parameter's device, then hands them back
/// (<see cref="Commit"/>). A store that keeps state elsewhere copies in and out there; one that keeps it on the
/// device returns the state itself.
/// </summary>
internal interface IStateStore : IDisposable
{
    /// <summary>Allocates zeroed state for every parameter; returns each parameter's home tensors, in slot order.</summary>
    Tensor[][] Allocate(IReadOnlyList<(StateSlot[] Slots, Device Device)> parameters);

    /// <summary>Tensors on <paramref name="device"/> holding the current state; valid until <see cref="Commit"/>.</summary>
    Tensor[] Fetch(Tensor[] homes, Device device);

    /// <summary>Writes updated state back to its home (no-op when it was updated in place).</summary>
    void Commit(Tensor[] homes, Tensor[] working);

    /// <summary>State bytes that must sit in the compute device's working memory at once.</summary>
    long ResidentBytes { get; }
}
