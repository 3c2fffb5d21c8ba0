using PeftSharp.Memory;

namespace PeftSharp.Memory.Tests;

/// <summary>Each knob of what a GPU trainer does moves the plan in the documented direction, by the documented amount.</summary>
public class GpuTrainerModelTests
{
    // llama-3.1-8b: h 4096, MLP 14336, 32 layers, 32 heads, 8 kv heads (kv width 1024), vocab 128256.
    const long H = 4096, I = 14336, L = 32, Kv = 1024, V = 128256;
    static readonly ModelShape Llama8b = Presets.Shape("llama-3.1-8b");
    static readonly PlanRequest Qlora = new() { Method = TuningMethod.Qlora, BatchSize = 2, SequenceLength = 2048, Memory = MemoryView.Allocated };

    static MemoryPlan Plan(PlanRequest r) => MemoryPlanner.Plan(Llama8b, r);

    [Fact]
    public void Loss_full_keeps_bf16_logits_and_three_fp32_buffers_chunked_less_fused_no_vocab_term()
    {
        long tokens = 2 * 2048;
        var full = Plan(Qlora);
        var chunked = Plan(Qlora with { Loss = LossKind.Chunked });
        var fused = Plan(Qlora with { Loss = LossKind.Fused });
        Assert.Equal((2 + 3 * 4) * tokens * V, full.LogitsBytes);
        Assert.Equal((2 + 4 + 1) * tokens * V, chunked.LogitsBytes); // logits + saved log-softmax + 1/8 of 2 fp32 buffers
        Assert.Equal((2 + 2 + 4) * tokens * H, fused.LogitsBytes);   // hidden gradient + one Liger-sized chunk
        Assert.True(full.TotalBytes > chunked.TotalBytes && chunked.TotalBytes > fused.TotalBytes);
        // For a 128k vocabulary the loss decides several GB at batch 2 x 2048.
        Assert.True(full.TotalBytes - fused.TotalBytes > 7_000_000_000);
    }

    [Fact]
    public void Memory_views_add_allocator_slack_then_the_cuda_context()
    {
        var allocated = Plan(Qlora);
        var reserved = Plan(Qlora with { Memory = MemoryView.Reserved });
        var device = Plan(Qlora with { Memory = MemoryView.Device });
        Assert.Equal(0, allocated.AllocatorSlackBytes);
        Assert.Equal(PlanRequest.CublasWorkspaceBytes, allocated.FrameworkOverheadBytes);
        Assert.Equal((long)Math.Ceiling((allocated.TotalBytes - allocated.FrameworkOverheadBytes) * MemoryPlanner.AllocatorSlackFraction),
            reserved.AllocatorSlackBytes);
        Assert.Equal(allocated.TotalBytes + reserved.AllocatorSlackBytes, reserved.TotalBytes);
        Assert.Equal(reserved.TotalBytes + PlanRequest.DefaultCudaOverheadBytes, device.TotalBytes);
        // On CPU the figure is resident memory: no CUDA slack; where this machine's training processes run peft train's
        // buffer cache, the idle share its cap allows of the step's transient tensors, whatever the memory view.
        var cpu = Plan(Qlora with { Device = DeviceKind.Cpu, Memory = MemoryView.Reserved });
        long transient = cpu.ActivationsAtPeakBytes + cpu.LogitsBytes + cpu.DequantBufferBytes;
        Assert.Equal(CpuRuntime.BufferCache ? (long)Math.Ceiling(transient * CpuRuntime.BufferCacheSlackFraction) : 0, cpu.AllocatorSlackBytes);
        Assert.Equal(0, Plan(Qlora with { Device = DeviceKind.Cpu, FrameworkOverheadBytes = 1 }).AllocatorSlackBytes);
    }

    [Fact]
    public void Compile_drops_the_fp32_norm_upcasts_and_the_silu_product()
    {
        var eager = Plan(Qlora);
        var compiled = Plan(Qlora with { Compile = true });
        long tokens = 2 * 2048;
        Assert.Equal(L * tokens * (4 * H + 2 * I), eager.ActivationsBytes - compiled.ActivationsBytes);
    }

    [Fact]
    public void Flash_attention_keeps_grouped_keys_and_values_sdpa_with_a_mask_repeats_them()
    {
        var sdpa = Plan(Qlora with { Attention = AttentionKind.Fused });
        var flash = Plan(Qlora with { Attention = AttentionKind.Flash });
        Assert.Equal(L * 2 * 2048 * 4 * (H - Kv), sdpa.ActivationsBytes - flash.ActivationsBytes);
        var eager = Plan(Qlora with { Attention = AttentionKind.Eager });
        Assert.Equal(L * 2 * 2048L * 2048 * 32 * 7, eager.ActivationsBytes - sdpa.ActivationsBytes); // fp32 softmax + bf16 copy + mask
    }

    [Fact]
    public void Gemma2_keeps_its_soft_capped_scores_as_transformers_eager_attention_does_unless_flash_soft_caps_them()
    {
        // gemma-2-2b (its published config.json): h 2304, 26 layers, 8 heads x head_dim 256, 4 kv heads (kv width 1024),
        // attn_logit_softcapping 50. transformers trains it with eager attention (SDPA cannot soft-cap): the 1024^2 scores
        // of each of 8 heads keep the fp32 softmax, its bf16 copy, the dropout mask (7 B, as eager Llama) and tanh's
        // bf16 output (2 B); flash-attn soft-caps inside its kernel and keeps none, with k/v at their grouped width.
        var gemma = Presets.Shape("gemma-2-2b");
        MemoryPlan G(AttentionKind a) => MemoryPlanner.Plan(gemma, new PlanRequest { Method = TuningMethod.Lora, BatchSize = 1, SequenceLength = 1024, Attention = a });
        var byDefault = G(AttentionKind.Fused);
        Assert.Equal(G(AttentionKind.Eager).ActivationsBytes, byDefault.ActivationsBytes);
        Assert.Equal(26L * 8 * 1024 * 1024 * (7 + 2) + 26L * 1024 * 4 * (2304 - 1024), byDefault.ActivationsBytes - G(AttentionKind.Flash).ActivationsBytes);
        Assert.Contains("soft-capped scores", byDefault.ActivationPaths);
        // A model without a soft-cap keeps no scores under SDPA (llama-3.1-8b above: only the k/v width differs).
        Assert.Equal(L * 2 * 2048 * 4 * (H - Kv), Plan(Qlora).ActivationsBytes - Plan(Qlora with { Attention = AttentionKind.Flash }).ActivationsBytes);
    }

    [Fact]
    public void Lora_keeps_an_fp32_copy_of_each_adapted_input_and_a_mask_with_dropout()
    {
        var req = Qlora with { Method = TuningMethod.Lora, Targets = TargetMatcher.FromNames(["q_proj", "v_proj"]) };
        var baseOnly = MemoryPlanner.Plan(Llama8b, req, new ActivationModel
        {
            PerTokenHidden = ActivationModel.Transformers.PerTokenHidden, PerTokenKeyValue = ActivationModel.Transformers.PerTokenKeyValue,
            PerTokenIntermediate = ActivationModel.Transformers.PerTokenIntermediate, PerScore = 7, LossFp32Buffers = 3,
        });
        var lora = Plan(req);
        long tokens = 2 * 2048;
        Assert.Equal(L * tokens * 2 * H * 4, lora.ActivationsBytes - baseOnly.ActivationsBytes);
        var dropout = Plan(req with { LoraDropout = 0.1 });
        Assert.Equal(L * tokens * 2 * H * 1, dropout.ActivationsBytes - lora.ActivationsBytes);
        var dora = Plan(req with { Method = TuningMethod.Dora });
        Assert.Equal(L * tokens * (H + Kv) * (2 + 4), dora.ActivationsBytes - lora.ActivationsBytes);
    }

    [Fact]
    public void Checkpointing_overlaps_the_recomputed_layer_with_the_loss_and_offload_moves_inputs_to_the_host()
    {
        var ckpt = Plan(Qlora with { GradientCheckpointing = true });
        long kept = L * 2 * 2048 * H * 2;
        Assert.True(ckpt.LogitsBytes > ckpt.ActivationsBytes - kept); // 128k vocab: the loss outweighs one layer
        Assert.Equal(kept, ckpt.ActivationsAtPeakBytes);
        var offloaded = Plan(Qlora with { GradientCheckpointing = true, OffloadActivations = true });
        Assert.Equal(kept, offloaded.HostBytes);
        Assert.Equal(kept / L, offloaded.ActivationsAtPeakBytes);
        Assert.True(offloaded.TotalBytes < ckpt.TotalBytes);
        var saveOnCpu = Plan(Qlora with { OffloadActivations = true });
        Assert.Equal(Plan(Qlora).ActivationsBytes, saveOnCpu.HostBytes);
        Assert.True(saveOnCpu.TotalBytes < Plan(Qlora).TotalBytes);
    }

    [Fact]
    public void Full_fine_tuning_with_checkpointing_peaks_at_the_foreach_adamw_step()
    {
        var req = new PlanRequest { Method = TuningMethod.Full, MasterWeights = false, BatchSize = 1, SequenceLength = 1024,
            GradientCheckpointing = true, Memory = MemoryView.Allocated };
        var plan = Plan(req);
        long n = Llama8b.TotalParameters;
        Assert.Equal(2 * n, plan.GradientsBytes);
        Assert.Equal(4 * n, plan.OptimizerBytes);              // bf16 moments: torch.optim follows the parameter dtype
        Assert.Equal(2 * n, plan.OptimizerStepTemporaryBytes); // _foreach_sqrt(exp_avg_sqs)
        Assert.Equal("optimizer step", plan.PeakPhase);
        Assert.Equal(2 * n + 2 * n + 4 * n + 2 * n + PlanRequest.CublasWorkspaceBytes, plan.TotalBytes);
        // 8-bit / paged optimisers run fused kernels without that temporary.
        Assert.Equal(0, Plan(req with { Optimizer = OptimizerKind.AdamW8bit }).OptimizerStepTemporaryBytes);
    }

    [Fact]
    public void Qlora_keeps_each_quantised_linear_input_as_bitsandbytes_saves_it()
    {
        var lora = Plan(Qlora with { Method = TuningMethod.Lora });
        var qlora = Plan(Qlora);
        // q/k/v share one input, gate/up another; o_proj and down_proj their own: 3 x 2 B per h + 2 B per i.
        Assert.Equal(L * 2 * 2048 * (3 * 2 * H + 2 * I), qlora.ActivationsBytes - lora.ActivationsBytes);
    }

    [Fact]
    public void Gradients_grow_only_as_backward_frees_activations()
    {
        var full = Plan(new PlanRequest { Method = TuningMethod.Full, BatchSize = 8, SequenceLength = 4096, Memory = MemoryView.Allocated });
        Assert.True(full.ActivationsAtPeakBytes + full.LogitsBytes > full.GradientsBytes);
        Assert.Equal(0, full.GradientsAtPeakBytes);
    }
}
