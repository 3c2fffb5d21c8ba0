namespace PeftSharp.Memory;

/// <summary>
/// Bytes kept for the backward pass. Per decoder layer (Korthikanti et al. 2022, 16-bit activations):
/// <c>s*b*h*PerTokenHidden + s*s*b*a*PerScore</c> = <c>s*b*h*(34 + 5*a*s/h)</c>. Fused attention keeps no s^2 scores.
/// Gradient checkpointing keeps <c>CheckpointPerTokenHidden*s*b*h</c> per layer (the layer inputs) plus one
/// layer's full activations while it is recomputed. fp32 compute doubles everything.
/// The constants are public so a bench can calibrate them against measured runs (e.g. TorchSharp eager on CPU).
/// </summary>
public sealed class ActivationModel
{
    /// <summary>Bytes per s*b*h per layer for 16-bit activations (Korthikanti's 34).</summary>
    public double PerTokenHidden { get; init; } = 34;
    /// <summary>Bytes per s*s*b*a per layer for eager attention: scores, softmax, dropout mask (Korthikanti's 5).</summary>
    public double PerScore { get; init; } = 5;
    /// <summary>Bytes per s*b*h per layer kept under full recomputation (one 16-bit copy of the layer input).</summary>
    public double CheckpointPerTokenHidden { get; init; } = 2;
    /// <summary>fp32 copies of b*s*V held around the loss: the upcast logits and the softmax/gradient buffer.</summary>
    public double LogitsFp32Copies { get; init; } = 2;

    public static ActivationModel Default { get; } = new();

    /// <summary>Activations of one layer, fully stored.</summary>
    public double LayerBytes(ModelConfig c, long batch, long seq, AttentionKind attention, DType compute)
    {
        double sbh = (double)seq * batch * c.HiddenSize;
        double scores = attention == AttentionKind.Eager ? (double)seq * seq * batch * c.NumAttentionHeads * PerScore : 0;
        return (sbh * PerTokenHidden + scores) * Scale(compute);
    }

    /// <summary>All layers' activations, with or without gradient checkpointing.</summary>
    public long Bytes(ModelConfig c, long batch, long seq, AttentionKind attention, DType compute, bool checkpointing)
    {
        double layer = LayerBytes(c, batch, seq, attention, compute);
        if (!checkpointing) return (long)Math.Ceiling(layer * c.NumHiddenLayers);
        double kept = (double)seq * batch * c.HiddenSize * CheckpointPerTokenHidden * Scale(compute);
        return (long)Math.Ceiling(kept * c.NumHiddenLayers + layer);
    }

    /// <summary>Logits and cross-entropy buffers: <c>LogitsFp32Copies * 4 * b*s*V</c>.</summary>
    public long LogitsBytes(ModelConfig c, long batch, long seq) =>
        (long)Math.Ceiling(LogitsFp32Copies * 4 * batch * seq * c.VocabSize);

    /// <summary>Korthikanti's constants are for 2-byte activations.</summary>
    static double Scale(DType compute) => Dtypes.BytesPerElement(compute) / 2.0;
}
