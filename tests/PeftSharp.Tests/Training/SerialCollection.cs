namespace PeftSharp.Tests.Training;

/// <summary>
/// Tests that read or change process-wide torch state run alone: the live tensor count (Tensor.TotalCount), which
/// tensors made by tests running in parallel would change, and the intra-op thread count, which changes the bits of
/// matmul results that other tests compare exactly.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SerialCollection
{
    public const string Name = "Serial (process-wide torch state)";
}
