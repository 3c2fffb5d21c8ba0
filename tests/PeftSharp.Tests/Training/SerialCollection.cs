namespace PeftSharp.Tests.Training;

/// <summary>
/// Tests that read the process-wide live tensor count (Tensor.TotalCount) run alone, since tensors made by tests
/// running in parallel would change it.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SerialCollection
{
    public const string Name = "Serial (process-wide tensor count)";
}
