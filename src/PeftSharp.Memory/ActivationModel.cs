namespace PeftSharp.Memory;

/// <summary>
/// Bytes kept for the backward pass. Per decoder layer, in bytes at 16-bit activations (fp32 compute doubles them):
/// <c>s*b*h*PerTokenHidden + s*b*i*PerTokenIntermediate + s*s*b*a*PerScore</c>, plus
/// <c>s*b*(h*(TrainedNormsPerTokenHidden + TrainedLinearsPerTokenHidden) + i*TrainedLinearsPerTokenIntermediate)</c>
/// when the base trains (full fine-tuning: a frozen Linear needs only its weight for the input's gradient, a trained
/// one also keeps its input). Fused attention keeps no s^2 scores. <c>torch.compile</c> fuses elementwise chains and
/// drops <c>CompileSavesPerTokenHidden/Intermediate</c>. Gradient checkpointing keeps
/// <c>CheckpointPerTokenHidden*s*b*h</c> per layer (the layer inputs) plus one layer's full activations while it is
/// recomputed. Around the loss, <see cref="LossBytes"/>.
/// <see cref="Transformers"/> counts what HF transformers' Llama keeps on a GPU; <see cref="TorchSharpCpuFp32"/> what this
/// project's layers keep under libtorch's CPU autograd; <see cref="Korthikanti"/> is the textbook Megatron figure.
/// </summary>
internal sealed class ActivationModel
{
    /// <summary>The profile's name in plans and JSON.</summary>
    public string Name { get; init; } = "custom";

    /// <summary>Bytes per s*b*h per layer for 16-bit activations, kept whether or not the base trains.</summary>
    public double PerTokenHidden { get; init; } = 34;
    /// <summary>Bytes per token per layer for the saved keys and values, per element of their width: the full hidden
    /// width when they are repeated to every head (eager, SDPA with a mask), the key/value width under flash attention.</summary>
    public double PerTokenKeyValue { get; init; }
    /// <summary>Bytes per s*b*intermediate per layer for 16-bit activations; 0 where <see cref="PerTokenHidden"/>
    /// already covers the MLP.</summary>
    public double PerTokenIntermediate { get; init; }
    /// <summary>Bytes per s*b*h per layer added when the norm weights train: each norm keeps its normalised input.</summary>
    public double TrainedNormsPerTokenHidden { get; init; }
    /// <summary>Bytes per s*b*h per layer added when the base Linears train: the inputs their weight gradients need.</summary>
    public double TrainedLinearsPerTokenHidden { get; init; }
    /// <summary>Bytes per s*b*intermediate per layer added when the base Linears train (the down projection's input).</summary>
    public double TrainedLinearsPerTokenIntermediate { get; init; }
    /// <summary>Bytes per s*s*b*a per layer for eager attention: scores, softmax, dropout mask (Korthikanti's 5).</summary>
    public double PerScore { get; init; } = 5;
    /// <summary>Bytes per s*s*b*a per layer eager attention adds where the config soft-caps the scores (Gemma 2's
    /// <c>attn_logit_softcapping</c>): <c>tanh</c> keeps its output for its backward.</summary>
    public double SoftcapPerScore { get; init; }
    /// <summary>A config that soft-caps its scores runs eager attention under <see cref="AttentionKind.Fused"/> (the
    /// trainer's default): transformers' SDPA cannot soft-cap, so Gemma 2 is trained with eager attention (transformers
    /// says so when another is used), which materialises the scores; flash-attn 2.6+ soft-caps inside its kernel
    /// (<see cref="AttentionKind.Flash"/>: no scores).</summary>
    public bool SoftcapRunsEager { get; init; }
    /// <summary>Bytes per s*b*h per layer kept under full recomputation (one 16-bit copy of the layer input).</summary>
    public double CheckpointPerTokenHidden { get; init; } = 2;
    /// <summary>fp32 buffers of b*s*V around an unchunked loss besides the logits themselves (in the compute dtype):
    /// the log-softmax output, its gradient and the logits' fp32 gradient, alive together at the start of backward.</summary>
    public double LossFp32Buffers { get; init; } = 1.5;
    /// <summary>Bytes per s*b*h per layer that <c>torch.compile</c>'s fused kernels do not keep.</summary>
    public double CompileSavesPerTokenHidden { get; init; }
    /// <summary>Bytes per s*b*intermediate per layer that <c>torch.compile</c>'s fused kernels do not keep.</summary>
    public double CompileSavesPerTokenIntermediate { get; init; }
    /// <summary>Count the input every LoRA module keeps for its A matrix (PEFT casts it to the adapter dtype), and
    /// DoRA's two saved outputs per module (the base result and the LoRA result that its magnitude multiplies).</summary>
    public bool CountsAdapterInputs { get; init; }
    /// <summary>The LoRA modules' A matrices multiply the input in the compute dtype (torch.autocast's way: a 16-bit
    /// copy of A, the 16-bit input kept as it is), so each counts in x the compute dtype's bytes, not the adapter dtype's
    /// (DoRA still casts its input up to the adapter dtype).</summary>
    public bool AdapterInputsInComputeDtype { get; init; }
    /// <summary>The trainer frees gradients before each forward (<c>zero_grad(set_to_none=True)</c>, PyTorch's default
    /// since 2.0 and HF Trainer's), so without accumulation they grow only as backward frees activations: the peak is
    /// the larger of the two, not their sum.</summary>
    public bool GradientsFreedBeforeForward { get; init; }
    /// <summary>The optimiser is torch.optim's foreach AdamW: its step allocates one parameter-sized temporary
    /// (<c>_foreach_sqrt(exp_avg_sqs)</c> in torch/optim/adamw.py <c>_multi_tensor_adamw</c>) while weights, gradients
    /// and state are all resident; that moment can be the peak (full fine-tuning with checkpointing).</summary>
    public bool ForeachOptimizerTemporary { get; init; }
    /// <summary>bitsandbytes' <c>MatMul4Bit</c> saves its input whenever any input needs a gradient
    /// (<c>ctx.tensors = (A, B)</c>), so a frozen NF4 Linear keeps its input like a trained one does.</summary>
    public bool QuantizedLinearsKeepInputs { get; init; }
    /// <summary>With checkpointing (or offload) the loss buffers are freed before the first layer is recomputed, so the
    /// in-flight layer and the loss do not add up: the larger of the two sits on the kept layer inputs.</summary>
    public bool LossFreedBeforeRecompute { get; init; }

    /// <summary>The head emits fp32 logits whatever the compute dtype (this project's 16-bit training: the target's logit
    /// is computed in fp32 and written into an fp32 copy of the 16-bit logits, which the loss would make anyway), so
    /// the logits held through the loss count 4 B each.</summary>
    public bool LogitsInFp32 { get; init; }

    /// <summary>PeftSharp's CPU layers: what they keep by the path a model takes (its attention, its MLP activation,
    /// Gemma 2's extra norms and soft-caps); null for other trainers' profiles.</summary>
    public CpuLayerPaths? Cpu { get; init; }

    /// <summary>Chunks of torchtune's <c>CEWithChunkedOutputLoss</c>.</summary>
    public const int LossChunks = 8;

    // Declared before the profiles that copy them (static initialisers run in text order).
    /// <summary>fp32 attention: the kernel keeps q, k, v and its output (o_proj's input); SDPA also the head-merged
    /// copy; the explicit path q, k, v and the merged copy (the value product's output is not kept), plus per score the
    /// softmax output (saved by softmax and the value product) and the soft-cap's tanh output. One fp32 tensor = 2.</summary>
    static readonly CpuLayerPaths Fp32Paths = new()
    {
        KernelAttention = 2 * 4, SdpaAttention = 2 * 5, ExplicitAttention = 2 * 4,
        ExplicitPerScore = 2, SoftcapPerScore = 2,
        SwiGluOpChainExtra = 2, GeluTanhOpChainExtra = 2 * 3, PerNorm = 2,
    };

    /// <summary>16-bit attention: q, k, v and the output on the kernel and SDPA paths (the head-merged copy is counted as
    /// o_proj's LoRA input); the explicit path q, k, v, plus per score the fp32 softmax output (4 B), its 16-bit copy
    /// the value product keeps (2 B) and the soft-cap's 16-bit tanh output (2 B). The
    /// head's soft-cap measured 1.5 fp32 b*s*V buffers (bench/plan-vs-measured.sh COMPUTE=bf16 TYPE=gemma2).</summary>
    static readonly CpuLayerPaths Bf16Paths = new()
    {
        KernelAttention = 4 * 2, SdpaAttention = 4 * 2, ExplicitAttention = 3 * 2,
        ExplicitPerScore = 4 + 2, SoftcapPerScore = 2,
        GeluTanhOpChainExtra = 3 * 2, PerNorm = 4, FinalSoftcapFp32Buffers = 1.5,
    };

    /// <summary>Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models": Megatron-style
    /// layers with every weight trained, 34*s*b*h + 5*a*s^2*b; the logits as 2 fp32 copies.</summary>
    public static ActivationModel Korthikanti { get; } = new() { Name = "korthikanti" };

    /// <summary>
    /// HF transformers' Llama (modeling_llama.py) in bf16 on a GPU with PEFT, counted from the code (README.md has the
    /// list). Always kept: both RMSNorms' fp32 upcast inputs (saved by <c>pow</c>; 2 x 4 B), and what SDPA keeps: q and
    /// its output (2 x 2 B per h), k and v (2 x 2 B, per h when <c>repeat_kv</c> copies them to every head because a
    /// padding mask is passed, per key/value width under flash attention);
    /// in the MLP the gate output (SiLU input), SiLU output and up output (3 x 2 B). Trained base adds each norm's
    /// normalised input (2 x 2 B) and the Linears' inputs: the attention input, the head-merged attention output, the MLP
    /// input (3 x 2 B per h) and the down projection's input (2 B per i). Loss (transformers' <c>ForCausalLMLoss</c>):
    /// bf16 logits + 3 fp32 buffers. Eager attention: fp32 softmax, its bf16 copy, the dropout mask (4 + 2 + 1).
    /// <c>torch.compile</c> (Inductor) fuses RMSNorm, keeping the 16-bit input instead of the fp32 upcast (2 x 2 B per h),
    /// and SiLU(gate)*up, keeping gate and up only (2 B per i).
    /// </summary>
    public static ActivationModel Transformers { get; } = new()
    {
        Name = "transformers",
        PerTokenHidden = 2 * 4 + 2 * 2,
        PerTokenKeyValue = 2 * 2,
        PerTokenIntermediate = 3 * 2,
        TrainedNormsPerTokenHidden = 2 * 2,
        TrainedLinearsPerTokenHidden = 3 * 2,
        TrainedLinearsPerTokenIntermediate = 2,
        PerScore = 4 + 2 + 1,
        // modeling_gemma2.py eager_attention_forward: scores * scaling, / softcap, tanh, * softcap, + mask, fp32
        // softmax, its 16-bit copy (what the value product keeps): of the soft-cap's ops only tanh keeps a tensor.
        SoftcapPerScore = 2,
        SoftcapRunsEager = true,
        CheckpointPerTokenHidden = 2,
        LossFp32Buffers = 3,
        CompileSavesPerTokenHidden = 2 * 2,
        CompileSavesPerTokenIntermediate = 2,
        CountsAdapterInputs = true,
        GradientsFreedBeforeForward = true,
        ForeachOptimizerTemporary = true,
        LossFreedBeforeRecompute = true,
        QuantizedLinearsKeepInputs = true,
    };

    /// <summary>
    /// This project's Llama layers in fp32 under libtorch's CPU autograd (README.md has the tensor-by-tensor count).
    /// Per layer, 9 hidden-sized tensors (layer input, q/k/v input, rotated q and k, v, attention output, its
    /// head-merged copy, the residual after attention, the MLP input) and 4 intermediate-sized ones (gate output,
    /// SiLU output, up output, their product). Full fine-tuning adds the two norms' normalised inputs. libtorch's
    /// CPU flash attention keeps no s^2 scores, with or without a mask. Around the loss: the logits, their
    /// log-softmax and, in the backward, its gradient and the logits' gradient (logits + 3 fp32 buffers).
    /// </summary>
    public static ActivationModel TorchSharpCpuFp32 { get; } = new()
    {
        Name = "torchsharp-cpu-fp32",
        PerTokenHidden = 2 * 9,
        PerTokenIntermediate = 2 * 4,
        TrainedNormsPerTokenHidden = 2 * 2,
        PerScore = 0,
        CheckpointPerTokenHidden = 2,
        LossFp32Buffers = 3,
        Cpu = Fp32Paths with { Kernels = false, SwiGluKernel = false },
    };

    /// <summary>
    /// This project's layers under `train --compute-dtype bf16` (or fp16) on CPU: the base and activations in 16 bits, fp32
    /// adapters. Per layer, both RMSNorms keep their fp32 upcast input (2 x 4 B per h; HF's
    /// <c>hidden_states.to(torch.float32)</c>) instead of the 16-bit one; attention keeps rotated q and k, v and its output
    /// (4 x 2 B per h); the MLP the gate output, SiLU output and up output (3 x 2 B per i). What the fp32 profile counts
    /// as shared Linear inputs (q/k/v input, the head-merged attention output, the MLP input, the down projection's
    /// input) is kept here only by the LoRA modules, whose A matrices multiply it in 16 bits while training
    /// (<see cref="CountsAdapterInputs"/>, <see cref="AdapterInputsInComputeDtype"/>: in x 2 B per adapted module, an upper
    /// bound where q/k/v share one input). Loss: the 16-bit logits, their fp32 upcast's
    /// log-softmax and, in the backward, its gradient and the logits' fp32 gradient (3 fp32 buffers), the logits
    /// themselves in fp32 (<see cref="LogitsInFp32"/>: the head writes the target's fp32 logit into an fp32 copy).
    /// </summary>
    public static ActivationModel TorchSharpCpuBf16 { get; } = new()
    {
        Name = "torchsharp-cpu-bf16",
        PerTokenHidden = 2 * 4 + 4 * 2,
        PerTokenIntermediate = 3 * 2,
        TrainedNormsPerTokenHidden = 2 * 2,
        PerScore = 0,
        CheckpointPerTokenHidden = 2,
        LossFp32Buffers = 3,
        CountsAdapterInputs = true,
        AdapterInputsInComputeDtype = true,
        LogitsInFp32 = true,
        Cpu = Bf16Paths,
    };

    /// <summary>
    /// This project's layers in fp32 where its C# kernels run (AVX-512F or AVX2 + FMA; PeftSharp's Kernels folder: causal attention with
    /// rotary inside, RMSNorm, SwiGLU, the loss), which keep fewer tensors than libtorch's op chains: the attention output
    /// is o_proj's input itself (8 hidden-sized tensors, not 9), SwiGLU keeps gate and up but not SiLU's output (3
    /// intermediate-sized), a trained norm weight's gradient comes from the saved input and row rstd (no normalised
    /// copy), and the loss keeps each row's logsumexp instead of an [N, V] log-softmax, its backward writing the
    /// logits' gradient directly (1 fp32 buffer). Measured by bench/plan-vs-measured.sh.
    /// </summary>
    public static ActivationModel TorchSharpCpuFp32Kernels { get; } = new()
    {
        Name = "torchsharp-cpu-fp32-kernels",
        PerTokenHidden = 2 * 8,
        PerTokenIntermediate = 2 * 3,
        TrainedNormsPerTokenHidden = 0,
        PerScore = 0,
        CheckpointPerTokenHidden = 2,
        LossFp32Buffers = 1,
        Cpu = Fp32Paths with { Kernels = true, SwiGluKernel = true },
    };

    /// <summary>
    /// <see cref="TorchSharpCpuBf16"/> where the C# kernels run: the RMSNorm kernel computes in fp32 from the 16-bit
    /// input it keeps (2 x 2 B per h instead of the fp32 upcasts' 2 x 4 B); the attention kernel keeps what SDPA kept;
    /// the SwiGLU kernel (bf16 too) keeps gate and up, not SiLU's output (2 x 2 B per i); the loss kernel on the fp32
    /// logits keeps one fp32 gradient buffer, and the head's backward casts it to 16 bits (1.5 fp32 buffers).
    /// </summary>
    public static ActivationModel TorchSharpCpuBf16Kernels { get; } = new()
    {
        Name = "torchsharp-cpu-bf16-kernels",
        PerTokenHidden = 2 * 2 + 4 * 2,
        PerTokenIntermediate = 2 * 2,
        TrainedNormsPerTokenHidden = 0,
        PerScore = 0,
        CheckpointPerTokenHidden = 2,
        LossFp32Buffers = 1.5,
        CountsAdapterInputs = true,
        AdapterInputsInComputeDtype = true,
        LogitsInFp32 = true,
        // The RMSNorm kernel keeps the 16-bit input, not an fp32 upcast; the SwiGLU kernel (bf16 too) keeps gate and up,
        // and an activation it does not take adds its op chain's 16-bit output back.
        Cpu = Bf16Paths with { Kernels = true, SwiGluKernel = true, SwiGluOpChainExtra = 2, PerNorm = 2 },
    };

    /// <summary>Whether the CPU profiles are the kernels' (this machine has AVX-512F, or AVX2 + FMA, where PeftSharp's C#
    /// kernels run: Kernels/KernelLanes.Supported and CausalAttentionKernel.Supports ask the same); settable for tests.</summary>
    internal static bool CpuKernels { get; set; } = System.Runtime.Intrinsics.X86.Avx512F.IsSupported
        || System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported;

    /// <summary>The profile for where the request runs: on CPU (this project's trainer) the fp32 or 16-bit profile by
    /// compute dtype, the kernels' where they run on this machine (<see cref="CpuKernels"/>) and take the dtype, else
    /// <see cref="Transformers"/> (PyTorch + transformers + PEFT on a GPU).</summary>
    public static ActivationModel For(PlanRequest request) => request.Device != DeviceKind.Cpu ? Transformers
        : request.ResolvedComputeDtype == DType.Fp32 ? (CpuKernels ? TorchSharpCpuFp32Kernels : TorchSharpCpuFp32)
        // The attention and RMSNorm kernels take fp32 and bf16 only: fp16 runs SDPA and the norms' op chain (its loss
        // still runs the kernel on the fp32 logits, which this profile's 3 buffers overcount by 1.5).
        : CpuKernels && request.ResolvedComputeDtype == DType.Bf16 ? TorchSharpCpuBf16Kernels : TorchSharpCpuBf16;

    /// <summary>Activations of one layer, fully stored; on CPU by the paths this model takes (<see cref="Cpu"/>).</summary>
    /// <remarks><c>linearsKeepInputs</c>: the base Linears keep their inputs without training the norms (QLoRA under
    /// bitsandbytes); <c>baseTrains</c> implies it.</remarks>
    /// <remarks><c>masked</c>: the layer attends under its sliding window's mask (on CPU: SDPA, not the kernel).</remarks>
    public double LayerBytes(ModelConfig c, long batch, long seq, AttentionKind attention, DType compute,
        bool baseTrains = false, bool compiled = false, bool linearsKeepInputs = false, bool masked = false)
    {
        double sb = (double)seq * batch;
        bool inputs = baseTrains || linearsKeepInputs;
        // Gemma 2's four norms per layer: the trained-norm count is for two.
        double trainedNorms = TrainedNormsPerTokenHidden * (Cpu is not null && c.ModelType == "gemma2" ? 2 : 1);
        double perHidden = PerTokenHidden + (baseTrains ? trainedNorms : 0) + (inputs ? TrainedLinearsPerTokenHidden : 0)
            - (compiled ? CompileSavesPerTokenHidden : 0) + (Cpu?.ExtraPerTokenHidden(c, masked) ?? 0);
        double perInter = PerTokenIntermediate + (inputs ? TrainedLinearsPerTokenIntermediate : 0)
            - (compiled ? CompileSavesPerTokenIntermediate : 0) + (Cpu?.ExtraPerTokenIntermediate(c) ?? 0);
        double perScore = (RunsEager(c, attention) ? PerScore + (c.AttnLogitSoftcapping is not null ? SoftcapPerScore : 0) : 0) + (Cpu?.PerScore(c) ?? 0);
        double scores = sb * seq * c.NumAttentionHeads * perScore;
        double kvWidth = attention == AttentionKind.Flash ? (double)c.KeyValueHeads * c.ResolvedHeadDim : c.HiddenSize;
        return (sb * c.HiddenSize * perHidden + sb * kvWidth * PerTokenKeyValue + sb * c.IntermediateSize * perInter + scores) * Scale(compute);
    }

    /// <summary>Whether this trainer materialises the s x s scores of <paramref name="c"/> under <paramref name="attention"/>.</summary>
    public bool RunsEager(ModelConfig c, AttentionKind attention) =>
        attention == AttentionKind.Eager || (SoftcapRunsEager && attention == AttentionKind.Fused && c.AttnLogitSoftcapping is not null);

    /// <summary>All layers' activations, with or without gradient checkpointing.</summary>
    public long Bytes(ModelConfig c, long batch, long seq, AttentionKind attention, DType compute, bool checkpointing,
        bool baseTrains = false, bool compiled = false)
    {
        var (mean, widest, mask) = Layers(c, batch, seq, attention, compute, baseTrains, compiled);
        if (!checkpointing) return (long)Math.Ceiling(mean * c.NumHiddenLayers + mask);
        return (long)Math.Ceiling(CheckpointBytesPerLayer(c, batch, seq, compute) * c.NumHiddenLayers + widest + mask);
    }

    /// <summary>
    /// A layer's activations averaged over the model's layers and the largest one, which differ on CPU where sliding-window
    /// layers attend under a mask (<see cref="CpuLayerPaths.MaskedLayers"/>), and that mask (kept for the backward of
    /// every masked layer, once). Elsewhere every layer is alike and there is no mask to add: transformers passes its
    /// padding mask anyway (SDPA's repeated k/v are counted) and its eager attention masks scores it keeps in full.
    /// </summary>
    public (double Mean, double Widest, double Mask) Layers(ModelConfig c, long batch, long seq, AttentionKind attention, DType compute,
        bool baseTrains = false, bool compiled = false, bool linearsKeepInputs = false)
    {
        double plain = LayerBytes(c, batch, seq, attention, compute, baseTrains, compiled, linearsKeepInputs);
        int masked = Cpu is null ? 0 : CpuLayerPaths.MaskedLayers(c, seq);
        if (masked == 0) return (plain, plain, 0);
        double windowed = LayerBytes(c, batch, seq, attention, compute, baseTrains, compiled, linearsKeepInputs, masked: true);
        int layers = c.NumHiddenLayers;
        return ((plain * (layers - masked) + windowed * masked) / layers, Math.Max(plain, windowed),
            (double)batch * seq * seq * Dtypes.BytesPerElement(compute));
    }

    /// <summary>What gradient checkpointing keeps of one layer: its input.</summary>
    public double CheckpointBytesPerLayer(ModelConfig c, long batch, long seq, DType compute) =>
        (double)seq * batch * c.HiddenSize * CheckpointPerTokenHidden * Scale(compute);

    /// <summary>
    /// Logits and loss buffers at their peak (the start of backward). Full: the logits in the compute dtype plus
    /// <see cref="LossFp32Buffers"/> fp32 copies of b*s*V. Chunked (torchtune, <see cref="LossChunks"/> chunks): the
    /// logits, every chunk's saved fp32 log-softmax, and one chunk's two fp32 gradient buffers. Fused (Liger / Cut Cross
    /// Entropy / unsloth): no b*s*V tensor; the hidden states' gradient computed in the forward (b*s*h) and one chunk of
    /// logits and their gradient, which Liger sizes to b*s*h/V tokens, i.e. b*s*h elements.
    /// </summary>
    public long LossBytes(ModelConfig c, long batch, long seq, LossKind loss, DType compute)
    {
        double tokens = (double)batch * seq;
        double e = Dtypes.BytesPerElement(compute), logit = LogitsInFp32 ? 4 : e;
        return (long)Math.Ceiling(loss switch
        {
            LossKind.Full => tokens * c.VocabSize * (logit + 4 * (LossFp32Buffers + (Cpu?.FinalSoftcapBuffers(c) ?? 0))),
            LossKind.Chunked => tokens * c.VocabSize * (logit + 4 + 2.0 * 4 / LossChunks),
            _ => tokens * c.HiddenSize * (e + e + 4),
        });
    }

    /// <summary>The constants are bytes at 2-byte activations.</summary>
    static double Scale(DType compute) => Dtypes.BytesPerElement(compute) / 2.0;
}
