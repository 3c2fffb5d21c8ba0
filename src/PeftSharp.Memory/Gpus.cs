namespace PeftSharp.Memory;

/// <summary>A GPU model and its memory.</summary>
/// <param name="Name">The card(s) with their memory in the unit it comes in, e.g. "24 GiB (RTX 3090/4090, A10)".</param>
/// <param name="Bytes">Its memory in bytes.</param>
public sealed record GpuSpec(string Name, long Bytes);

/// <summary>
/// Common cards. Their memory is binary (a card sold as "24 GB" has 24 GiB, 25.77 GB) and named so; H200's 141 GB is
/// decimal. `peft plan` prints each card's bytes in GB (10^9) beside its name, as it prints the plan and the headroom.
/// </summary>
public static class Gpus
{
    const long GiB = 1L << 30;

    /// <summary>16, 24, 40, 48, 80 GiB and 141 GB cards, smallest first: what <see cref="MemoryPlan.Fits"/> is usually asked about.</summary>
    public static IReadOnlyList<GpuSpec> Common { get; } =
    [
        new("16 GiB (T4, V100-16, 4060 Ti)", 16 * GiB),
        new("24 GiB (RTX 3090/4090, A10)", 24 * GiB),
        new("40 GiB (A100-40)", 40 * GiB),
        new("48 GiB (A6000, L40S)", 48 * GiB),
        new("80 GiB (A100-80, H100)", 80 * GiB),
        new("141 GB (H200)", 141_000_000_000),
    ];
}
