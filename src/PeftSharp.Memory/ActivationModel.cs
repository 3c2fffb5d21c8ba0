namespace PeftSharp.Memory;

/// <summary>
/// Bytes kept for the backward pass. Per decoder layer, in bytes at 16-bit activations (fp32 compute doubles them):
/// <c>s*b*h*PerTokenHidden + s*b*i*PerTokenIntermediate + s*s*b*a*PerScore</c>, plus
/// <c>s*b*h*TrainedNormsPerTokenHidden</c> when the norms train (full fine-tuning). Fused attention keeps no s^2 scores.
/// Gradient checkpointing keeps <c>CheckpointPerTokenHidden*s*b*h</c> per layer (the layer inputs) plus one
/// layer's full activations while it is recomputed. Around the loss, <c>LogitsFp32Copies</c> fp32 copies of b*s*V.
/// <see cref="Default"/> is Korthikanti et al. 2022 (GPU, Megatron-style layers); <see cref="TorchSharpCpuFp32"/> counts
/// the tensors this project's own layers keep under libtorch's CPU autograd, checked by bench/plan-vs-measured.sh.
/// </summary>
public sealed class ActivationModel
{
    /// <summary>Bytes per s*b*h per layer for 16-bit activations (Korthikanti's 34, which includes a 4h MLP).</summary>
    public double PerTokenHidden { get; init; } = 34;
    /// <summary>Bytes per s*b*intermediate per layer for 16-bit activations; 0 where <see cref="PerTokenHidden"/>
    /// already covers the MLP.</summary>
    public double PerTokenIntermediate { get; init; }
    /// <summary>Bytes per s*b*h per layer added when the norm weights train: each norm keeps its normalised input.</summary>
    public double TrainedNormsPerTokenHidden { get; init; }
    /// <summary>Bytes per s*s*b*a per layer for eager attention: scores, softmax, dropout mask (Korthikanti's 5).</summary>
    public double PerScore { get; init; } = 5;
    /// <summary>Bytes per s*b*h per layer kept under full recomputation (one 16-bit copy of the layer input).</summary>
    public double CheckpointPerTokenHidden { get; init; } = 2;
    /// <summary>fp32 copies of b*s*V held around the loss: the upcast logits and the softmax/gradient buffer.</summary>
    public double LogitsFp32Copies { get; init; } = 2;

    /// <summary>Korthikanti et al. 2022: Megatron-style layers on a GPU.</summary>
    public static ActivationModel Default { get; } = new();

    /// <summary>
    /// This project's Llama layers in fp32 under libtorch's CPU autograd (README.md has the tensor-by-tensor count).
    /// Per layer, 9 hidden-sized tensors (layer input, q/k/v input, rotated q and k, v, attention output, its
    /// head-merged copy, the residual after attention, the MLP input) and 4 intermediate-sized ones (gate output,
    /// SiLU output, up output, their product). Full fine-tuning adds the two norms' normalised inputs. libtorch's
    /// CPU flash attention keeps no s^2 scores, with or without a mask. Around the loss: the logits, their
    /// log-softmax and, in the backward, its gradient and the logits' gradient (4 copies).
    /// </summary>
    public static ActivationModel TorchSharpCpuFp32 { get; } = new()
    {
        PerTokenHidden = 2 * 9,
        PerTokenIntermediate = 2 * 4,
        TrainedNormsPerTokenHidden = 2 * 2,
        PerScore = 0,
        CheckpointPerTokenHidden = 2,
        LogitsFp32Copies = 4,
    };

    /// <summary>The profile measured for where the request runs: <see cref="TorchSharpCpuFp32"/> for fp32 on CPU,
    /// else <see cref="Default"/>.</summary>
    public static ActivationModel For(PlanRequest request) =>
        request.Device == DeviceKind.Cpu && request.ResolvedComputeDtype == DType.Fp32 ? TorchSharpCpuFp32 : Default;

    /// <summary>Activations of one layer, fully stored.</summary>
    public double LayerBytes(ModelConfig c, long batch, long seq, AttentionKind attention, DType compute, bool normsTrain = false)
    {
        double sb = (double)seq * batch;
        double perHidden = PerTokenHidden + (normsTrain ? TrainedNormsPerTokenHidden : 0);
        double scores = attention == AttentionKind.Eager ? sb * seq * c.NumAttentionHeads * PerScore : 0;
        return (sb * c.HiddenSize * perHidden + sb * c.IntermediateSize * PerTokenIntermediate + scores) * Scale(compute);
    }

    /// <summary>All layers' activations, with or without gradient checkpointing.</summary>
    public long Bytes(ModelConfig c, long batch, long seq, AttentionKind attention, DType compute, bool checkpointing, bool normsTrain = false)
    {
        double layer = LayerBytes(c, batch, seq, attention, compute, normsTrain);
        if (!checkpointing) return (long)Math.Ceiling(layer * c.NumHiddenLayers);
        double kept = (double)seq * batch * c.HiddenSize * CheckpointPerTokenHidden * Scale(compute);
        return (long)Math.Ceiling(kept * c.NumHiddenLayers + layer);
    }

    /// <summary>Logits and cross-entropy buffers: <c>LogitsFp32Copies * 4 * b*s*V</c>.</summary>
    public long LogitsBytes(ModelConfig c, long batch, long seq) =>
        (long)Math.Ceiling(LogitsFp32Copies * 4 * batch * seq * c.VocabSize);

    /// <summary>The constants are bytes at 2-byte activations.</summary>
    static double Scale(DType compute) => Dtypes.BytesPerElement(compute) / 2.0;
}
