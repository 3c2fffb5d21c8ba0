using System.Text.Json.Nodes;

namespace PeftSharp.Memory.Tests;

/// <summary>
/// The CPU plan follows the kernels a model really gets (CpuLayerPaths): attention by head_dim and Gemma 2's score
/// settings, read from config.json as `peft plan` / `peft train` read it; the figures are the tensor counts
/// bench/plan-vs-measured.sh checked (README.md, "Model paths on CPU").
/// </summary>
public class CpuLayerPathsTests
{
    const int H = 320, I = 864, Layers = 4, Vocab = 8000;
    const long S = 512, B = 2;

    static ModelShape Shape(int heads, string type = "llama", Action<JsonObject>? edit = null)
    {
        var json = new JsonObject
        {
            ["model_type"] = type, ["hidden_size"] = H, ["intermediate_size"] = I, ["num_hidden_layers"] = Layers,
            ["num_attention_heads"] = heads, ["vocab_size"] = Vocab,
        };
        if (type == "gemma2") json["head_dim"] = H / heads;
        edit?.Invoke(json);
        return ModelShape.FromConfig(ModelConfig.Parse(json.ToJsonString()));
    }

    static readonly PlanRequest Lora = new()
    {
        Device = DeviceKind.Cpu, Method = TuningMethod.Lora, Rank = 8, Targets = TargetMatcher.Parse("all-linear"),
        WeightDtype = DType.Fp32, BatchSize = (int)B, SequenceLength = (int)S,
    };

    static MemoryPlan Plan(ModelShape shape, ActivationModel profile, PlanRequest? request = null) =>
        MemoryPlanner.Plan(shape, request ?? Lora, profile);

    static readonly ActivationModel Kernels = ActivationModel.TorchSharpCpuFp32Kernels;

    [Fact]
    public void Head_dim_80_keeps_sdpa_and_its_head_merged_copy_under_the_kernels_profile()
    {
        // head_dim 64: the attention kernel, 8 fp32 hidden-sized tensors; head_dim 80 (not a multiple of 32): SDPA, 9.
        long kernel = Plan(Shape(5), Kernels).ActivationsBytes, sdpa = Plan(Shape(4), Kernels).ActivationsBytes;
        Assert.Equal(Layers * 4 * (8 * S * B * H + 3 * S * B * I), kernel);
        Assert.Equal(Layers * 4 * (9 * S * B * H + 3 * S * B * I), sdpa);
        // The op-chain profile (no AVX-512) runs SDPA for both.
        Assert.Equal(Plan(Shape(5), ActivationModel.TorchSharpCpuFp32).ActivationsBytes, Plan(Shape(4), ActivationModel.TorchSharpCpuFp32).ActivationsBytes);
    }

    [Fact]
    public void The_kernel_keeps_grouped_keys_and_values_at_their_own_width()
    {
        // 5 query heads of 64 sharing one key/value head: k and v are 64 wide, not 320 (2 fp32 tensors of 64 - 320).
        var gqa = Shape(5, edit: j => j["num_key_value_heads"] = 1);
        Assert.Equal(Plan(Shape(5), Kernels).ActivationsBytes - Layers * 4 * 2 * S * B * (H - 64), Plan(gqa, Kernels).ActivationsBytes);
        // SDPA repeats them to every head first: no difference.
        Assert.Equal(Plan(Shape(5), ActivationModel.TorchSharpCpuFp32).ActivationsBytes, Plan(gqa, ActivationModel.TorchSharpCpuFp32).ActivationsBytes);
    }

    [Fact]
    public void Qwen3_counts_its_query_width_and_q_k_norm_inputs()
    {
        // 4 heads of 128 (q width 512) and 2 kv heads (256) on a 320-wide stream: q and the output at 512, k and v at
        // 256 (the kernel), and the q/k norms keep their inputs (512 + 256), besides the 4 hidden-sized tensors.
        var qwen = Shape(4, "qwen3", j => { j["head_dim"] = 128; j["num_key_value_heads"] = 2; });
        Assert.Equal(Layers * 4 * S * B * (4 * H + 2 * 512 + 2 * 256 + 512 + 256 + 3 * I), Plan(qwen, Kernels).ActivationsBytes);
    }

    [Fact]
    public void Gemma2_soft_capped_scores_count_their_t_squared_tensors()
    {
        const int heads = 5;
        // Gemma 2 with the transformers defaults (attn_logit_softcapping 50, query_pre_attn_scalar 256 != head_dim 64):
        // explicit scores, the softmax and tanh outputs kept per score (2 fp32 tensors); q, k, v and the head-merged
        // copy (8 hidden-sized with the norms' and residual's), + the two extra norms' inputs; GeGLU on the SwiGLU kernel.
        var gemma = Shape(heads, "gemma2");
        long hidden = (8 + 2) * S * B * H, inter = 3 * S * B * I, scores = 2 * S * S * B * heads;
        Assert.Equal(Layers * 4 * (hidden + inter + scores), Plan(gemma, Kernels).ActivationsBytes);
        // Without the soft-cap, a scale other than 1/sqrt(head_dim) still needs the scores: the softmax output only.
        var scaled = Shape(heads, "gemma2", j => j["attn_logit_softcapping"] = null);
        Assert.Equal(Layers * 4 * (hidden + inter + S * S * B * heads), Plan(scaled, Kernels).ActivationsBytes);
        // Neither: the attention kernel, no s^2 term.
        var plain = Shape(heads, "gemma2", j => { j["attn_logit_softcapping"] = null; j["query_pre_attn_scalar"] = H / heads; });
        Assert.Equal(Layers * 4 * (hidden + inter), Plan(plain, Kernels).ActivationsBytes);
        // The op-chain profile counts the same scores (its SDPA would keep none, but Gemma's scores are explicit there too).
        Assert.Equal(Plan(gemma, ActivationModel.TorchSharpCpuFp32).ActivationsBytes - Plan(plain, ActivationModel.TorchSharpCpuFp32).ActivationsBytes,
            Layers * 4 * (scores - S * B * H));   // the op chain's SDPA also kept its output beside the merged copy
    }

    [Fact]
    public void Gemma2_logit_soft_cap_adds_logit_sized_buffers()
    {
        long tokens = S * B;
        Assert.Equal(tokens * Vocab * 4 * (1 + 1 + 3), Plan(Shape(5, "gemma2"), Kernels).LogitsBytes);
        Assert.Equal(tokens * Vocab * 4 * (1 + 1), Plan(Shape(5, "gemma2", j => j["final_logit_softcapping"] = null), Kernels).LogitsBytes);
        // With a bf16 base: the fp32 logits, the loss kernel's 1.5 buffers, and 1.5 for the soft-cap (measured).
        var bf16 = Lora with { WeightDtype = DType.Bf16, ComputeDtype = DType.Bf16 };
        Assert.Equal(tokens * Vocab * 4 * (1 + 1.5 + 1.5), Plan(Shape(5, "gemma2"), ActivationModel.TorchSharpCpuBf16Kernels, bf16).LogitsBytes);
    }

    [Fact]
    public void Gelu_tanh_on_the_op_chain_keeps_three_more_intermediate_tensors()
    {
        // No SwiGLU kernel (no AVX-512, or 16-bit compute): 0.5 g, tanh's output and tanh + 1 besides silu's count.
        var silu = Shape(5, "gemma2", j => j["hidden_activation"] = "silu");
        var gelu = Shape(5, "gemma2");
        Assert.Equal(Layers * 4 * 3 * S * B * I, Plan(gelu, ActivationModel.TorchSharpCpuFp32).ActivationsBytes - Plan(silu, ActivationModel.TorchSharpCpuFp32).ActivationsBytes);
        // The fp32 kernel runs both activations alike.
        Assert.Equal(Plan(silu, Kernels).ActivationsBytes, Plan(gelu, Kernels).ActivationsBytes);
    }

    [Fact]
    public void Bf16_explicit_scores_keep_an_fp32_softmax_its_16_bit_copy_and_the_tanh_output()
    {
        var bf16 = Lora with { WeightDtype = DType.Bf16, ComputeDtype = DType.Bf16 };
        var profile = ActivationModel.TorchSharpCpuBf16Kernels;
        var gemma = Shape(5, "gemma2");
        var plain = Shape(5, "gemma2", j => { j["attn_logit_softcapping"] = null; j["query_pre_attn_scalar"] = H / 5; });
        // 8 B per score; the explicit path keeps no attention output (2 B per h fewer than the kernel's).
        Assert.Equal(Layers * (8 * S * S * B * 5 - 2 * S * B * H),
            Plan(gemma, profile, bf16).ActivationsBytes - Plan(plain, profile, bf16).ActivationsBytes);
    }

    [Fact]
    public void Config_fields_that_decide_the_path_are_parsed_with_transformers_defaults()
    {
        var absent = Shape(5, "gemma2").Config;
        Assert.Equal((50.0, 30.0, 256.0, "gelu_pytorch_tanh"), (absent.AttnLogitSoftcapping, absent.FinalLogitSoftcapping, absent.QueryPreAttnScalar, absent.HiddenAct));
        Assert.True(absent.ExplicitAttentionScores);
        var off = Shape(5, "gemma2", j => { j["attn_logit_softcapping"] = null; j["final_logit_softcapping"] = null; j["query_pre_attn_scalar"] = 64; j["hidden_act"] = "silu"; });
        Assert.Null(off.Config.AttnLogitSoftcapping);
        Assert.Null(off.Config.FinalLogitSoftcapping);
        Assert.Equal("silu", off.Config.HiddenAct);   // hidden_activation absent: hidden_act
        Assert.False(off.Config.ExplicitAttentionScores);
        Assert.Equal("gelu_pytorch_tanh", Shape(5, "gemma2", j => { j["hidden_activation"] = "gelu_pytorch_tanh"; j["hidden_act"] = "silu"; }).Config.HiddenAct);
        var llama = Shape(5, edit: j => j["attn_logit_softcapping"] = 10.0).Config;   // other families have no soft-cap
        Assert.Null(llama.AttnLogitSoftcapping);
        Assert.Null(llama.QueryPreAttnScalar);
        Assert.Equal("silu", llama.HiddenAct);
        Assert.False(llama.ExplicitAttentionScores);
        var e = Assert.Throws<PlanException>(() => Shape(5, "gemma2", j => j["attn_logit_softcapping"] = "high"));
        Assert.Equal("attn_logit_softcapping", e.Field);
        Assert.Equal("query_pre_attn_scalar", Assert.Throws<PlanException>(() => Shape(5, "gemma2", j => j["query_pre_attn_scalar"] = 0)).Field);
    }

    [Fact]
    public void The_plan_names_the_paths_it_counted()
    {
        Assert.Equal("attention kernel, MLP kernel", Plan(Shape(5), Kernels).ActivationPaths);
        Assert.Equal("attention SDPA (head_dim 80), MLP kernel", Plan(Shape(4), Kernels).ActivationPaths);
        Assert.Equal("attention explicit scores (soft-cap 50), MLP gelu_pytorch_tanh op chain, logit soft-cap",
            Plan(Shape(5, "gemma2"), ActivationModel.TorchSharpCpuFp32).ActivationPaths);
        Assert.Equal("", MemoryPlanner.Plan(Shape(5), Lora with { Device = DeviceKind.Cuda }).ActivationPaths);
    }

    [Fact]
    public void Gemma_2_2b_preset_carries_its_config_json_values()
    {
        var c = Presets.Config("gemma-2-2b");
        Assert.Equal((50.0, 30.0, 256.0, "gelu_pytorch_tanh"), (c.AttnLogitSoftcapping, c.FinalLogitSoftcapping, c.QueryPreAttnScalar, c.HiddenAct));
    }

    [Fact]
    public void Sliding_window_layers_shorter_than_the_sequence_run_sdpa_under_one_shared_mask()
    {
        // Mistral-7B-v0.1's config.json (h 4096, 32 layers, 32 heads, 8 kv heads: q width 1 x h, k/v 0.25 x h),
        // sliding_window 4096 on every layer, fp32, b 1 x s 8192. The kernel path keeps 8 fp32-pairs per h less 2 x 2 x
        // 0.75 for grouped k/v (5); under the window's mask every layer runs SDPA (10): 5 x 2 B more per s*b*h per
        // layer, plus the [1, 1, s, s] fp32 mask once.
        static ModelShape Mistral(int window) => ModelShape.FromConfig(ModelConfig.Parse(new JsonObject
        {
            ["model_type"] = "mistral", ["hidden_size"] = 4096, ["intermediate_size"] = 14336, ["num_hidden_layers"] = 32,
            ["num_attention_heads"] = 32, ["num_key_value_heads"] = 8, ["vocab_size"] = 32000, ["sliding_window"] = window,
            ["max_position_embeddings"] = 32768,
        }.ToJsonString()));
        var request = Lora with { BatchSize = 1, SequenceLength = 8192 };
        long windowed = Plan(Mistral(4096), Kernels, request).ActivationsBytes, open = Plan(Mistral(8192), Kernels, request).ActivationsBytes;
        Assert.Equal(32L * 8192 * 4096 * 5 * 2 + 8192L * 8192 * 4, windowed - open);
        // At a sequence within the window nothing changes; Gemma 2 masks only its even (local) layers.
        Assert.Equal(Plan(Mistral(8192), Kernels).ActivationsBytes, Plan(Mistral(4096), Kernels).ActivationsBytes);
        Assert.Equal(0, CpuLayerPaths.MaskedLayers(Mistral(4096).Config, 4096));
        Assert.Equal(32, CpuLayerPaths.MaskedLayers(Mistral(4096).Config, 4097));
        Assert.Equal(13, CpuLayerPaths.MaskedLayers(Presets.Config("gemma-2-2b"), 8192));
    }
}
