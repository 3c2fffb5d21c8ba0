namespace PeftSharp.Memory;

/// <summary>The attention a decoder layer of PeftSharp's engine runs while training on CPU.</summary>
internal enum CpuAttentionPath
{
    /// <summary>PeftSharp's causal attention kernel (Kernels/CausalAttention): its output is o_proj's input, nothing
    /// s x s kept.</summary>
    Kernel,
    /// <summary>libtorch's SDPA (CPU flash kernel): its output and the head-merged copy o_proj reads, nothing s x s kept.</summary>
    Sdpa,
    /// <summary>Scores computed op by op (Models/Attention.ExplicitAttention: Gemma 2's soft-cap or a scale other than
    /// 1/sqrt(head_dim)): the softmax output (and the soft-cap's tanh output) kept per score.</summary>
    ExplicitScores,
}

/// <summary>
/// What PeftSharp's CPU layers keep beyond the profile's own counts, by the path a model takes: the kernels in
/// src/PeftSharp/Kernels run only for some models, and the planner reads the config fields that decide it
/// (<see cref="ModelConfig.HeadDim"/>, <see cref="ModelConfig.ExplicitAttentionScores"/>, <see cref="ModelConfig.HiddenAct"/>).
/// Byte figures are per element at 16-bit activations, as <see cref="ActivationModel"/>'s (fp32 doubles them).
/// Measured with bench/plan-vs-measured.sh (README.md, "Model paths on CPU").
/// </summary>
internal sealed record CpuLayerPaths
{
    /// <summary>The profile assumes PeftSharp's C# kernels (AVX-512F or AVX2 + FMA: attention, RMSNorm, loss; SwiGLU where
    /// <see cref="SwiGluKernel"/>).</summary>
    public bool Kernels { get; init; }
    /// <summary>The fused SwiGLU kernel runs (fp32 and bf16): the profile's intermediate count is the kernel's.</summary>
    public bool SwiGluKernel { get; init; }
    /// <summary>Bytes per s*b*h that attention keeps on each path (q, k, v and what follows): counted in the profile's
    /// <see cref="ActivationModel.PerTokenHidden"/> for the path it was measured on, <see cref="Kernels"/> ? kernel : SDPA.</summary>
    public double KernelAttention { get; init; }
    /// <inheritdoc cref="KernelAttention"/>
    public double SdpaAttention { get; init; }
    /// <inheritdoc cref="KernelAttention"/>
    public double ExplicitAttention { get; init; }
    /// <summary>Bytes per element of one kept k or v tensor. The attention counts above hold k and v at the hidden width;
    /// the kernel reads grouped k/v as the projections wrote them (key/value width), where SDPA and the explicit path
    /// keep the copies repeated to every head.</summary>
    public double KeyValue { get; init; } = 2;
        /// <summary>Bytes per score (s*s*b*heads) per layer on the explicit path: the softmax output and what the value
    /// product keeps of it.</summary>
    public double ExplicitPerScore { get; init; }
    /// <summary>Bytes per score per layer added by attention soft-capping: <c>tanh</c> keeps its output.</summary>
    public double SoftcapPerScore { get; init; }
    /// <summary>Bytes per s*b*intermediate the op chain act(gate) * up keeps beyond the SwiGLU kernel (the activation's
    /// output), where the kernel does not take the activation.</summary>
    public double SwiGluOpChainExtra { get; init; }
    /// <summary>Bytes per s*b*intermediate that gelu_pytorch_tanh's op chain (Models/Attention.cs Mlp.Activate) keeps
    /// beyond silu's: 0.5 g, the tanh output and tanh + 1.</summary>
    public double GeluTanhOpChainExtra { get; init; }
    /// <summary>Bytes per s*b*h one RMSNorm keeps (its input, or its fp32 upcast on the 16-bit op chain): Gemma 2's two
    /// extra norms per layer add it twice.</summary>
    public double PerNorm { get; init; }
    /// <summary>fp32 b*s*V buffers that the LM head's soft-cap (Gemma 2's <c>final_logit_softcapping</c>) adds to the
    /// loss's: the tanh output it keeps and, in the backward, the gradients through the product and the tanh while the
    /// loss's is still held (measured 2.9-3.0 in fp32, 1.5 with a bf16 base).</summary>
    public double FinalSoftcapFp32Buffers { get; init; } = 3;

    /// <summary>The activations the SwiGLU kernel takes (Kernels/SwiGluKernel.Activation; the engine refuses others).</summary>
    public static bool SwiGluKernelTakes(string act) => act is "silu" or "gelu_pytorch_tanh";

    /// <summary>
    /// Mirrors the training forward's choice in src/PeftSharp/Models/Attention.cs (kept in step by
    /// PeftSharp.Tests' CpuLayerPathsEngineTests, which counts the kernel's calls): explicit scores where the config
    /// soft-caps or scales them otherwise; the kernel where the profile has it and head_dim is a multiple of 32
    /// (Kernels/CausalAttentionKernel); else SDPA. A layer whose sliding window is shorter than the sequence passes its
    /// window's mask (<paramref name="masked"/>), which the kernel does not take: SDPA there.
    /// </summary>
    public CpuAttentionPath AttentionOf(ModelConfig c, bool masked = false) =>
        c.ExplicitAttentionScores ? CpuAttentionPath.ExplicitScores
        : Kernels && !masked && c.ResolvedHeadDim % 32 == 0 ? CpuAttentionPath.Kernel
        : CpuAttentionPath.Sdpa;

    /// <summary>Layers of <paramref name="c"/> whose sliding window is shorter than <paramref name="seq"/>: they attend
    /// under a mask (the engine builds one [b, 1, s, s] mask in the compute dtype, shared by them, once any query sees
    /// more than the window: CausalLM.Forward).</summary>
    public static int MaskedLayers(ModelConfig c, long seq) =>
        c.SlidingWindow is { } w && seq > w ? Enumerable.Range(0, c.NumHiddenLayers).Count(l => c.WindowOf(l) is not null) : 0;

    /// <summary>Bytes per s*b*h to add to the profile's count for this model: its attention path's against the
    /// profile's (measured where the query width heads x head_dim is the hidden size and k/v are not grouped), with q,
    /// the output and SDPA's repeated k/v at the query width and the kernel's grouped k/v at the key/value width; Gemma
    /// 2's post-attention and post-MLP norms; Qwen3's per-head q/k norms (their inputs, at the query and key widths).</summary>
    public double ExtraPerTokenHidden(ModelConfig c, bool masked = false)
    {
        double h = c.HiddenSize, q = (double)c.NumAttentionHeads * c.ResolvedHeadDim / h, kv = (double)c.KeyValueHeads * c.ResolvedHeadDim / h;
        double measured = Kernels ? KernelAttention : SdpaAttention;
        var path = AttentionOf(c, masked);
        double actual = path switch
        {
            CpuAttentionPath.Kernel => KernelAttention,
            CpuAttentionPath.Sdpa => SdpaAttention,
            _ => ExplicitAttention,
        } * q + (path == CpuAttentionPath.Kernel ? 2 * KeyValue * (kv - q) : 0);
        double norms = c.ModelType switch { "gemma2" => 2, "qwen3" => q + kv, _ => 0 };
        return actual - measured + norms * PerNorm;
    }

    /// <summary>Bytes per s*b*intermediate to add for this model's activation.</summary>
    public double ExtraPerTokenIntermediate(ModelConfig c)
    {
        bool kernel = SwiGluKernel && SwiGluKernelTakes(c.HiddenAct);
        return (SwiGluKernel && !kernel ? SwiGluOpChainExtra : 0) + (!kernel && c.HiddenAct == "gelu_pytorch_tanh" ? GeluTanhOpChainExtra : 0);
    }

    /// <summary>Bytes per score per layer this model's attention keeps (0 off the explicit path).</summary>
    public double PerScore(ModelConfig c) => AttentionOf(c) != CpuAttentionPath.ExplicitScores ? 0
        : ExplicitPerScore + (c.AttnLogitSoftcapping is not null ? SoftcapPerScore : 0);

    /// <summary>The paths in words, for the printed plan: "attention kernel, SwiGLU kernel", "attention SDPA (head_dim
    /// 80), ...", "attention explicit scores (soft-cap 50), ..., logit soft-cap".</summary>
    public string Describe(ModelConfig c)
    {
        string attention = AttentionOf(c) switch
        {
            CpuAttentionPath.Kernel => "attention kernel",
            CpuAttentionPath.Sdpa => Kernels ? $"attention SDPA (head_dim {c.ResolvedHeadDim})" : "attention SDPA",
            _ => c.AttnLogitSoftcapping is { } cap ? $"attention explicit scores (soft-cap {cap:G})" : $"attention explicit scores (scale 1/sqrt({c.QueryPreAttnScalar:G}))",
        };
        string mlp = SwiGluKernel && SwiGluKernelTakes(c.HiddenAct) ? "MLP kernel" : $"MLP {c.HiddenAct} op chain";
        return $"{attention}, {mlp}{(c.FinalLogitSoftcapping is not null ? ", logit soft-cap" : "")}";
    }

    /// <summary>fp32 b*s*V buffers the head's soft-cap adds (0 without one).</summary>
    public double FinalSoftcapBuffers(ModelConfig c) => c.FinalLogitSoftcapping is not null ? FinalSoftcapFp32Buffers : 0;
}
