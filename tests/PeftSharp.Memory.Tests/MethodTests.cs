using PeftSharp.Memory;

namespace PeftSharp.Memory.Tests;

public class MethodTests
{
    static readonly ModelShape Tiny = Presets.Shape("smollm2-135m"); // h 576, I 1536, 30 layers, kv 192, V 49152

    [Fact]
    public void Lora_all_linear_is_rank_times_in_plus_out_over_every_block_linear()
    {
        var plan = MemoryPlanner.Plan(Tiny, new PlanRequest { Rank = 4, Targets = TargetMatcher.AllLinear() });
        long h = 576, kv = 192, i = 1536;
        long perLayer = 4 * ((h + h) + (h + kv) + (h + kv) + (h + h) + (h + i) + (h + i) + (i + h));
        Assert.Equal(30 * perLayer, plan.TrainableParameters);
        Assert.DoesNotContain(plan.TrainableTensors, t => t.Name.StartsWith("lm_head"));
    }

    [Fact]
    public void Lora_on_an_embedding_uses_rows_plus_dim()
    {
        var plan = MemoryPlanner.Plan(Tiny, new PlanRequest { Rank = 8, Targets = TargetMatcher.FromNames(["embed_tokens"]) });
        Assert.Equal(8 * (49152 + 576), plan.TrainableParameters);
    }

    [Fact]
    public void A_method_without_a_trainable_count_is_refused_not_counted_as_lora()
    {
        // A TuningMethod member added without its count in TrainableParameters used to fall through to LoRA's count.
        var e = Assert.Throws<PlanException>(() => MemoryPlanner.Plan(Tiny, new PlanRequest { Method = (TuningMethod)99 }));
        Assert.Equal("method: 99 has no count of trainable parameters (PeftSharp.Memory/TrainableParameters.cs)", e.Message);
        foreach (var m in Enum.GetValues<TuningMethod>()) MemoryPlanner.Plan(Tiny, new PlanRequest { Method = m });   // every member has one
    }

    [Fact]
    public void Houlsby_adapters_are_two_bottlenecks_per_layer()
    {
        var plan = MemoryPlanner.Plan(Tiny, new PlanRequest { Method = TuningMethod.Adapter, AdapterBottleneck = 16 });
        Assert.Equal(30 * 2 * (2 * 576 * 16 + 16 + 576), plan.TrainableParameters);
    }

    [Fact]
    public void Prompt_tuning_trains_tokens_times_hidden_and_lengthens_the_sequence()
    {
        var req = new PlanRequest { Method = TuningMethod.PromptTuning, VirtualTokens = 20, SequenceLength = 100 };
        var plan = MemoryPlanner.Plan(Tiny, req);
        Assert.Equal(20 * 576, plan.TrainableParameters);
        Assert.Equal((2L + 3 * 4) * 1 * 120 * 49152, plan.LogitsBytes); // bf16 logits + 3 fp32 buffers of b*(s+20)*V
    }

    [Fact]
    public void Full_bf16_with_master_weights_is_2_2_4_8_bytes_per_parameter()
    {
        long n = Tiny.TotalParameters;
        var plan = MemoryPlanner.Plan(Tiny, new PlanRequest { Method = TuningMethod.Full, WeightDtype = DType.Bf16 });
        Assert.Equal(2 * n, plan.WeightsBytes);
        Assert.Equal(2 * n, plan.GradientsBytes);
        Assert.Equal(4 * n, plan.MasterWeightsBytes);
        Assert.Equal(12 * n, plan.OptimizerBytes);
        var pure = MemoryPlanner.Plan(Tiny, new PlanRequest { Method = TuningMethod.Full, MasterWeights = false });
        Assert.Equal(4 * n, pure.OptimizerBytes); // torch.optim keeps its moments in the parameter dtype (bf16)
    }

    [Fact]
    public void Qlora_adds_the_largest_dequantised_layer()
    {
        var plan = MemoryPlanner.Plan(Tiny, new PlanRequest { Method = TuningMethod.Qlora });
        Assert.Equal(2L * 576 * 1536, plan.DequantBufferBytes); // bf16 MLP projection
        Assert.Equal(0, MemoryPlanner.Plan(Tiny, new PlanRequest()).DequantBufferBytes);
    }

    [Fact]
    public void Qlora_on_cpu_with_checkpointing_also_counts_the_layer_kept_for_its_backward()
    {
        var cpu = new PlanRequest { Method = TuningMethod.Qlora, Device = DeviceKind.Cpu, ComputeDtype = DType.Fp32 };
        var plain = MemoryPlanner.Plan(Tiny, cpu);
        var ckpt = MemoryPlanner.Plan(Tiny, cpu with { GradientCheckpointing = true });
        long layer = 2L * 576 * 576 + 2L * 576 * 192 + 3L * 576 * 1536;   // q, o; k, v (GQA); gate, up, down
        // On CPU the MLP projection (3.5 MB in fp32) is dequantised a tile at a time: 1 MiB per thread of two, but at least
        // 256 rows of the widest input (down_proj's 1536: 1.5 MiB per thread): the scratch is one tile in all.
        Assert.Equal(2L * 256 * 1536 * 4, plain.DequantBufferBytes);
        Assert.Equal(plain.DequantBufferBytes + Dtypes.Bytes(cpu.ResolvedComputeDtype, layer), ckpt.DequantBufferBytes);
        // bitsandbytes on CUDA keeps nothing between the recomputed forward and the backward.
        var cuda = new PlanRequest { Method = TuningMethod.Qlora };
        Assert.Equal(MemoryPlanner.Plan(Tiny, cuda).DequantBufferBytes, MemoryPlanner.Plan(Tiny, cuda with { GradientCheckpointing = true }).DequantBufferBytes);
    }

    [Fact]
    public void Lora_with_nf4_weights_is_qlora()
    {
        var q = MemoryPlanner.Plan(Tiny, new PlanRequest { Method = TuningMethod.Qlora });
        var l = MemoryPlanner.Plan(Tiny, new PlanRequest { Method = TuningMethod.Lora, WeightDtype = DType.Nf4 });
        Assert.Equal(q.WeightsBytes, l.WeightsBytes);
        Assert.True(q.WeightsBytes < MemoryPlanner.Plan(Tiny, new PlanRequest()).WeightsBytes / 2);
    }

    [Fact]
    public void Fits_and_headroom_compare_the_total_with_the_card()
    {
        var plan = MemoryPlanner.Plan(Tiny, new PlanRequest());
        Assert.True(plan.Fits(plan.TotalBytes));
        Assert.False(plan.Fits(plan.TotalBytes - 1));
        Assert.Equal(1000, plan.Headroom(plan.TotalBytes + 1000));
        Assert.Equal(plan.WeightsBytes + plan.GradientsAtPeakBytes + plan.OptimizerBytes + plan.ActivationsAtPeakBytes
            + plan.LogitsBytes + plan.DequantBufferBytes + plan.GatheredLayerBytes + plan.AllocatorSlackBytes
            + plan.FrameworkOverheadBytes, plan.TotalBytes);
        Assert.Equal("forward/backward", plan.PeakPhase);
    }

    [Fact]
    public void Mkl_intel_path_adds_its_measured_gemm_buffers_to_the_cpu_runtime()
    {
        var without = CpuRuntime.Training(vocabSize: 32000, mklIntelPath: false);
        var with = CpuRuntime.Training(vocabSize: 32000, mklIntelPath: true);
        Assert.Equal(without.Count + 1, with.Count);
        // Measured +21..+26 MB with a 32000-entry head, +8 MB with 8000 (CpuRuntime.MklIntelPathBytes).
        Assert.Equal(23_000_000, with.Sum(t => t.Bytes) - without.Sum(t => t.Bytes));
        Assert.Equal(8_000_000, CpuRuntime.MklIntelPathBytes(8000));
        // The default follows this machine, as the engine decides (Kernels/MklCodePath): AMD, Linux, not switched off.
        Assert.Equal(CpuRuntime.MklIntelPath ? with.Count : without.Count, CpuRuntime.Training(vocabSize: 32000).Count);
        // bf16 compute runs its GEMMs on oneDNN: no MKL term; nor without a model (no head width).
        Assert.DoesNotContain(CpuRuntime.Training(sixteenBitCompute: true, vocabSize: 32000, mklIntelPath: true), t => t.Name.Contains("MKL"));
        Assert.DoesNotContain(CpuRuntime.Training(mklIntelPath: true), t => t.Name.Contains("MKL"));
        // Through the planner: a CPU fp32 plan of a model carries the term for its vocabulary.
        var plan = MemoryPlanner.Plan(Tiny, new PlanRequest { Device = DeviceKind.Cpu, WeightDtype = DType.Fp32 });
        Assert.Equal(CpuRuntime.MklIntelPath, plan.RuntimeTerms.Any(t => t.Bytes == CpuRuntime.MklIntelPathBytes(Tiny.Config.VocabSize)));
    }

    [Fact]
    public void Packed_frozen_weights_add_twice_their_bytes_on_cpu_fp32_where_the_run_packs_them()
    {
        long frozen = 4 * Tiny.Modules.Where(m => m.Kind == ModuleKind.Linear).Sum(m => m.WeightElements);
        var on = new PlanRequest { Device = DeviceKind.Cpu, WeightDtype = DType.Fp32, PackFrozenWeights = true };
        long Packed(PlanRequest r) => MemoryPlanner.Plan(Tiny, r).RuntimeTerms.Where(t => t.Name.Contains("packed")).Sum(t => t.Bytes);
        // Both orientations of every frozen fp32 Linear (a tied head is the embedding: not a Linear's weight).
        Assert.Equal(CpuRuntime.CanPackWeights ? 2 * frozen : 0, Packed(on));
        Assert.Equal(MemoryPlanner.Plan(Tiny, on with { PackFrozenWeights = false }).TotalBytes + Packed(on), MemoryPlanner.Plan(Tiny, on).TotalBytes);
        // QLoRA: its NF4 Linears are dequantised at every call; an untied dense head is packed, a tied one is the embedding.
        var untied = Presets.Shape("llama-2-7b");
        long head = 4 * untied.Modules.Single(m => m.Name == "lm_head").WeightElements;
        var qlora = on with { Method = TuningMethod.Qlora, WeightDtype = DType.Nf4, ComputeDtype = DType.Fp32 };
        Assert.Equal(CpuRuntime.CanPackWeights ? 2 * 4 * 32000L * 4096 : 0, MemoryPlanner.Plan(untied, qlora).RuntimeTerms.Where(t => t.Name.Contains("packed")).Sum(t => t.Bytes));
        Assert.Equal(4 * 32000L * 4096, head);
        Assert.Equal(0, Packed(qlora));   // smollm2's head is tied
        // Nothing to pack: the base trains (full), computes in bf16, or runs on CUDA.
        Assert.Equal(0, Packed(on with { Method = TuningMethod.Full }));
        Assert.Equal(0, Packed(on with { ComputeDtype = DType.Bf16 }));
        Assert.Equal(0, Packed(on with { Device = DeviceKind.Cuda }));
        // Auto: packed while the copies fit in an eighth of the machine's memory (the engine's rule, Training/FrozenWeightPacking).
        Assert.Equal(CpuRuntime.CanPackWeights, CpuRuntime.PacksWeights(null, 1_000_000, memoryBytes: 16_000_000));
        Assert.False(CpuRuntime.PacksWeights(null, 1_000_001, memoryBytes: 16_000_000));
        Assert.False(CpuRuntime.PacksWeights(false, 1_000_000, memoryBytes: 16_000_000));
        Assert.Equal(CpuRuntime.CanPackWeights, CpuRuntime.PacksWeights(true, 1_000_001, memoryBytes: 16_000_000));
    }

    [Fact]
    public void Framework_overhead_is_a_per_device_constant_the_caller_can_override()
    {
        // CUDA, as nvidia-smi shows it: context and kernels, plus cuBLAS workspaces (allocated through PyTorch).
        Assert.Equal(PlanRequest.DefaultCudaOverheadBytes + PlanRequest.CublasWorkspaceBytes,
            MemoryPlanner.Plan(Tiny, new PlanRequest()).FrameworkOverheadBytes);
        // CPU: the runtime allowance in named, measured terms (bench/runtime-memory.sh), their sum in the total.
        var cpu = MemoryPlanner.Plan(Tiny, new PlanRequest { Device = DeviceKind.Cpu, WeightDtype = DType.Fp32, PackFrozenWeights = false });   // fp32 compute (bf16 adds a term: Bf16ProfileTests)
        long mkl = CpuRuntime.MklIntelPath ? CpuRuntime.MklIntelPathBytes(Tiny.Config.VocabSize) : 0;   // an AMD planning machine: MKL's Intel path
        Assert.Equal(239_000_000 + mkl, cpu.FrameworkOverheadBytes);
        Assert.Equal(cpu.FrameworkOverheadBytes, cpu.RuntimeTerms.Sum(t => t.Bytes));
        Assert.Equal(CpuRuntime.DefaultAfterLoadBytes, cpu.RuntimeTerms[0].Bytes);
        Assert.Equal(300_000_000 + 89_000_000 + mkl,
            MemoryPlanner.Plan(Tiny, new PlanRequest { Device = DeviceKind.Cpu, WeightDtype = DType.Fp32, PackFrozenWeights = false, CpuRuntimeAfterLoadBytes = 300_000_000 }).FrameworkOverheadBytes);
        Assert.Equal(2, MemoryPlanner.Plan(Tiny, new PlanRequest()).RuntimeTerms.Count); // CUDA: context + cuBLAS workspace
        Assert.Equal(123, MemoryPlanner.Plan(Tiny, new PlanRequest { FrameworkOverheadBytes = 123 }).FrameworkOverheadBytes);
        Assert.Equal(123, MemoryPlanner.Plan(Tiny, new PlanRequest { Device = DeviceKind.Cpu, FrameworkOverheadBytes = 123 }).RuntimeTerms.Single().Bytes);
    }
}

public class DefaultTargetTests
{
    [Fact]
    public void Default_targets_follow_peft_per_model_type()
    {
        var gpt2 = MemoryPlanner.Plan("gpt2", new PlanRequest { Rank = 8 });
        Assert.Equal(12 * 8 * (768 + 3 * 768), gpt2.TrainableParameters); // c_attn only
        var phi = MemoryPlanner.Plan("phi-3-mini", new PlanRequest { Rank = 8 });
        Assert.Equal(32 * 8 * (3072 + 3 * 3072), phi.TrainableParameters); // qkv_proj only
    }

    [Fact]
    public void Every_preset_and_method_plans()   // speed: bench/plan-speed.sh, not a timed test
    {
        foreach (var name in Presets.Names)
            foreach (var method in Enum.GetValues<TuningMethod>())
            {
                var plan = MemoryPlanner.Plan(name, new PlanRequest { Method = method });
                Assert.True(plan.TotalBytes > 0 && plan.TrainableParameters > 0, $"{name} {method}");
            }
    }
}
