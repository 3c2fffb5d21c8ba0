using PeftSharp.Memory;
using PeftSharp.Models;

namespace PeftSharp.Training;

/// <summary>
/// Packs a run's frozen fp32 weights for MKL during its steps (Models/TunableLinear.Pack, Kernels/PackedGemm): 1.04-1.18x on an
/// fp32 LoRA step for 2 x the frozen weights' bytes, chosen by the rule the memory plan uses
/// (Memory/CpuRuntime.PacksWeights: `--pack-weights on|off`, else auto within an eighth of the machine's memory).
/// Disposing drops the packed copies, so evaluation after the run, saving and merging see the plain weights only.
/// </summary>
internal sealed class FrozenWeightPacking : IDisposable
{
    readonly List<TunableLinear> _packed;

    /// <summary>What the run does, for its log: packed (and the bytes), or why not.</summary>
    public string Description { get; }

    FrozenWeightPacking(List<TunableLinear> packed, string description) => (_packed, Description) = (packed, description);

    /// <summary>The bytes <see cref="CpuRuntime.PacksWeights"/> weighs for <paramref name="model"/>: its layers' weights
    /// that can be packed (<see cref="TunableLinear.CanPack"/>: dense frozen fp32 on CPU).</summary>
    internal static long FrozenFp32Bytes(CausalLM model) => Candidates(model).Sum(l => l.InFeatures * l.OutFeatures * sizeof(float));

    static IEnumerable<TunableLinear> Candidates(CausalLM model) => model.Linears().Where(l => l.CanPack);

    /// <summary>Packs <paramref name="model"/>'s frozen weights when <paramref name="requested"/> (null = auto) says so, for
    /// products of <paramref name="rows"/> rows (a typical step's tokens, padding included: <see cref="TypicalRows"/>);
    /// fewer rows use the plain weights (Kernels/PackedLinear.Pair.Rows).</summary>
    public static FrozenWeightPacking Apply(CausalLM model, bool? requested, long rows)
    {
        long bytes = FrozenFp32Bytes(model);
        string packedMb = $"{CpuRuntime.PackedWeightBytes(bytes) / 1e6:F1} MB";
        if (bytes == 0) return new([], "not packed (no frozen fp32 weights on CPU)");
        if (!CpuRuntime.PacksWeights(requested, bytes))
            return new([], requested == false ? "not packed (--pack-weights off)"
                : !CpuRuntime.CanPackWeights ? "not packed (MKL's pack API is Linux x64 only)"
                : $"not packed (auto: the copies, {packedMb}, exceed {CpuRuntime.PackedWeightsMaxMemoryShare:P1} of this machine's memory; --pack-weights on packs them)");
        if (!Kernels.PackedGemm.Available) return new([], "not packed (this libtorch exports no MKL pack API)");
        int m = (int)Math.Clamp(rows, 1, int.MaxValue);
        var packed = Candidates(model).Where(l => l.Pack(m)).ToList();
        return new(packed, $"frozen weights packed for MKL: {packedMb} of copies ({(requested is null ? "auto" : "--pack-weights on")}; --pack-weights off saves them for slower steps)");
    }

    /// <summary>A typical micro-batch's rows: <paramref name="batch"/> sequences padded to the longest, estimated as the batch
    /// times the median length (capped at <paramref name="maxLength"/>). Most steps reach it (a batch's longest row is at
    /// least its median), so most go through the packed weights.</summary>
    public static long TypicalRows(IEnumerable<int> lengths, int batch, int maxLength)
    {
        var sorted = lengths.Order().ToList();
        int median = sorted.Count == 0 ? maxLength : sorted[sorted.Count / 2];
        return (long)batch * Math.Clamp(median, 1, Math.Max(1, maxLength));
    }

    public void Dispose()
    {
        foreach (var l in _packed) l.DropPacked();
        _packed.Clear();
    }
}
