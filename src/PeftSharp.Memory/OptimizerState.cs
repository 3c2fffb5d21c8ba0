namespace PeftSharp.Memory;

/// <summary>Optimiser state bytes per trainable tensor (bitsandbytes / torch.optim behaviour).</summary>
public static class OptimizerState
{
    /// <summary>bitsandbytes keeps 32-bit state for tensors smaller than this (min_8bit_size).</summary>
    public const long Min8BitElements = 4096;
    /// <summary>8-bit state is quantised blockwise with one fp32 absmax per block.</summary>
    public const int Block8Bit = 256;

    public static long Bytes(OptimizerKind kind, long elements) => kind switch
    {
        OptimizerKind.AdamW or OptimizerKind.PagedAdamW => 8 * elements,
        OptimizerKind.AdamW8bit or OptimizerKind.PagedAdamW8bit => elements < Min8BitElements
            ? 8 * elements
            : 2 * (elements + 4 * Dtypes.CeilDiv(elements, Block8Bit)),
        OptimizerKind.SgdMomentum => 4 * elements,
        _ => 0,
    };

    /// <summary>Paged optimisers keep state in unified memory the driver evicts to the host under pressure.</summary>
    public static bool IsPaged(OptimizerKind kind) => kind is OptimizerKind.PagedAdamW or OptimizerKind.PagedAdamW8bit;
}
