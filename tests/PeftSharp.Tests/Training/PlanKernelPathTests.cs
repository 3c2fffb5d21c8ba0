using PeftSharp.Kernels;
using PeftSharp.Memory;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>
/// The planner's reading of which CPU kernels a model gets (Memory's CpuLayerPaths, a predicate kept beside the engine
/// rather than shared with it) agrees with what the engine's training forward really runs: the kernels' call counters
/// over one forward of a loaded model.
/// </summary>
public class PlanKernelPathTests
{
    [Theory]
    [InlineData("llama", 128, 4, null, false)]   // head_dim 32: the attention kernel
    [InlineData("llama", 160, 2, null, false)]   // head_dim 80: SDPA
    [InlineData("llama", 64, 4, null, false)]    // head_dim 16: SDPA
    [InlineData("gemma2", 128, 4, 50.0, false)]  // soft-capped scores: explicit
    [InlineData("gemma2", 128, 4, null, true)]   // neither soft-cap nor another scale: the kernel
    [InlineData("gemma2", 128, 4, null, false)]  // query_pre_attn_scalar 256 != head_dim 32: explicit
    public void Planned_attention_path_is_the_one_the_engine_runs(string type, int hidden, int heads, double? softcap, bool headDimScale)
    {
        if (!CausalAttentionKernel.Supports(32)) return;   // no AVX2 + FMA: the op-chain profiles, no kernel to agree with
        var cfg = RandomModel.LlamaConfig(hidden: hidden, layers: 2, heads: heads, kvHeads: heads, vocab: 64, modelType: type, tied: type == "gemma2");
        if (type == "gemma2")
        {
            cfg["head_dim"] = hidden / heads;
            cfg["attn_logit_softcapping"] = softcap;
            cfg["sliding_window"] = 4096;   // a window that hides nothing at this length
            if (headDimScale) cfg["query_pre_attn_scalar"] = hidden / heads;
        }
        using var model = ModelLoader.Load(RandomModel.Write(cfg));
        var path = ActivationModel.TorchSharpCpuFp32Kernels.Cpu!.AttentionOf(model.Config.Shape);
        using var ids = randint(0, 64, [2, 40]);
        var (attention0, _) = CausalAttention.Calls;
        var (swiglu0, _) = SwiGlu.Calls;
        model.Forward(ids).Dispose();
        Assert.Equal(path == CpuAttentionPath.Kernel ? 2 : 0, CausalAttention.Calls.Forward - attention0);
        // The fp32 SwiGLU kernel takes both activations the engine runs (silu, Gemma's gelu_pytorch_tanh), on the CPUs
        // it runs on (the attention kernel also runs on AVX2 + FMA; SwiGluKernel.Supported says where SwiGLU's does).
        Assert.True(CpuLayerPaths.SwiGluKernelTakes(model.Config.HiddenAct));
        Assert.Equal(SwiGluKernel.Supported ? 2 : 0, SwiGlu.Calls.Forward - swiglu0);
    }

    /// <summary>A sliding window shorter than the sequence: the engine masks those layers and they leave the kernel, as
    /// the planner counts them (<see cref="CpuLayerPaths.MaskedLayers"/>): every layer for Mistral, Gemma 2's even ones.</summary>
    [Theory]
    [InlineData("mistral", 16, 2)]   // window 16 < 40 tokens: both layers masked
    [InlineData("mistral", 64, 0)]   // a window that hides nothing at this length
    [InlineData("gemma2", 16, 1)]    // layer 0 local, layer 1 global
    public void Layers_whose_window_bites_leave_the_kernel_as_planned(string type, int window, int masked)
    {
        if (!CausalAttentionKernel.Supports(32)) return;
        var cfg = RandomModel.LlamaConfig(hidden: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 64, modelType: type, tied: type == "gemma2");
        cfg["sliding_window"] = window;
        if (type == "gemma2")
        {
            cfg["head_dim"] = 32;
            cfg["attn_logit_softcapping"] = null;
            cfg["query_pre_attn_scalar"] = 32;   // scores scaled as 1/sqrt(head_dim): the kernel's path
        }
        using var model = ModelLoader.Load(RandomModel.Write(cfg));
        Assert.Equal(masked, CpuLayerPaths.MaskedLayers(model.Config.Shape, 40));
        Assert.Equal(CpuAttentionPath.Kernel, ActivationModel.TorchSharpCpuFp32Kernels.Cpu!.AttentionOf(model.Config.Shape));
        Assert.Equal(CpuAttentionPath.Sdpa, ActivationModel.TorchSharpCpuFp32Kernels.Cpu!.AttentionOf(model.Config.Shape, masked: true));
        using var ids = randint(0, 64, [2, 40]);
        var (attention0, _) = CausalAttention.Calls;
        model.Forward(ids).Dispose();
        Assert.Equal(2 - masked, CausalAttention.Calls.Forward - attention0);
    }
}
