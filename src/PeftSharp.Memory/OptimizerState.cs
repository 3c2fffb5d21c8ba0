namespace PeftSharp.Memory;

/// <summary>Optimiser state bytes per trainable tensor (bitsandbytes / torch.optim behaviour).</summary>
internal static class OptimizerState
{
    /// <summary>bitsandbytes keeps 32-bit state for tensors smaller than this (min_8bit_size).</summary>
    public const long Min8BitElements = 4096;
    /// <summary>8-bit state is quantised blockwise with one fp32 absmax per block.</summary>
    public const int Block8Bit = 256;

    /// <summary>State bytes of one tensor. <paramref name="sixteenBitState"/>: torch.optim keeps its moments in the
    /// parameter's dtype (<c>zeros_like(param)</c>), so pure 16-bit training (no fp32 master) halves them.</summary>
    public static long Bytes(OptimizerKind kind, long elements, bool sixteenBitState = false) => kind switch
    {
        OptimizerKind.AdamW or OptimizerKind.PagedAdamW => (sixteenBitState ? 4 : 8) * elements,
        OptimizerKind.AdamW8bit or OptimizerKind.PagedAdamW8bit => elements < Min8BitElements
            ? 8 * elements
            : 2 * (elements + 4 * Dtypes.CeilDiv(elements, Block8Bit)),
        OptimizerKind.SgdMomentum => (sixteenBitState ? 2 : 4) * elements,
        _ => 0,
    };

    /// <summary>Paged optimisers keep state in unified memory the driver evicts to the host under pressure.</summary>
    public static bool IsPaged(OptimizerKind kind) => kind is OptimizerKind.PagedAdamW or OptimizerKind.PagedAdamW8bit;
}
