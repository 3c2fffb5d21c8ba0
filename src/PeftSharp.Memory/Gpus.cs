namespace PeftSharp.Memory;

/// <summary>A GPU model and its memory.</summary>
/// <param name="Name">The card(s), e.g. "24 GB (RTX 3090/4090, A10)".</param>
/// <param name="Bytes">Its memory in bytes.</param>
public sealed record GpuSpec(string Name, long Bytes);

/// <summary>Common cards. Their memory is binary (a "24 GB" card has 24 GiB); H200's 141 GB is decimal.</summary>
public static class Gpus
{
    const long GiB = 1L << 30;

    /// <summary>16, 24, 40, 48, 80 GiB and 141 GB cards, smallest first: what <see cref="MemoryPlan.Fits"/> is usually asked about.</summary>
    public static IReadOnlyList<GpuSpec> Common { get; } =
    [
        new("16 GB (T4, V100-16, 4060 Ti)", 16 * GiB),
        new("24 GB (RTX 3090/4090, A10)", 24 * GiB),
        new("40 GB (A100-40)", 40 * GiB),
        new("48 GB (A6000, L40S)", 48 * GiB),
        new("80 GB (A100-80, H100)", 80 * GiB),
        new("141 GB (H200)", 141_000_000_000),
    ];
}
