using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>What every layer of one forward shares: rotary tables, the attention masks and the KV cache.</summary>
internal sealed class ForwardContext
{
    public required Tensor Cos { get; init; }
    public required Tensor Sin { get; init; }
    /// <summary>Additive float mask [B, 1, T, S] over all slots, or null for plain causal attention over an empty cache.</summary>
    public Tensor? Mask { get; init; }
    /// <summary>The same with the sliding window applied, or null when no layer's window can hide a key this forward.</summary>
    public Tensor? SlidingMask { get; init; }
    public KvCache? Cache { get; init; }
    /// <summary>
    /// <see cref="Mask"/> hides only trailing padding of each row (training's right-padded batches) and there is no
    /// cache: causal attention alone gives every real query the same keys (padding comes after it), so a layer may
    /// drop the mask; only the padded queries' outputs differ, and nothing real reads them.
    /// </summary>
    public bool MaskIsTrailingPadding { get; init; }

    /// <summary>The mask a layer with this window uses.</summary>
    public Tensor? MaskFor(int? window) => window is null ? Mask : SlidingMask ?? Mask;
}

/// <summary>
/// A hook on a decoder sub-layer's output, applied before the residual add (Houlsby adapters live here).
/// </summary>
internal interface ISublayerHook
{
    Tensor Apply(Tensor sublayerOut);
}
