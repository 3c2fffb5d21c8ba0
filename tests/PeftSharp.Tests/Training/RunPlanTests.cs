using PeftSharp.Data;
using PeftSharp.Memory;
using PeftSharp.Training;
using PeftSharp.Training.Methods;

namespace PeftSharp.Tests.Training;

public class RunPlanTests
{
    [Fact]
    public void Cpu_run_is_planned_with_the_torchsharp_cpu_profile()
    {
        var plan = RunPlan.For(TestPaths.TinyLlama, new MethodOptions { Method = "lora" }, new TrainerOptions { BatchSize = 3, Device = "cpu" }, 50);
        Assert.Equal(DeviceKind.Cpu, plan.Request.Device);
        Assert.Equal(AttentionKind.Fused, plan.Request.Attention);
        // tiny-llama: h 64, MLP 176, 2 layers, vocab 260; fp32, 9 hidden- and 4 MLP-sized tensors per layer, 4 logits copies
        // (where PeftSharp's AVX-512 kernels run: 3 MLP-sized, 2 logits copies; still 9 hidden-sized, as its head_dim 16
        // keeps SDPA, whose output and head-merged copy are both kept).
        bool k = ActivationModel.CpuKernels;
        Assert.Equal(k ? ActivationModel.TorchSharpCpuFp32Kernels.Name : ActivationModel.TorchSharpCpuFp32.Name, plan.ActivationProfile);
        long sb = 3 * 50;
        Assert.Equal(2 * 4 * (9 * sb * 64 + (k ? 3 : 4) * sb * 176), plan.ActivationsBytes);
        Assert.Equal((k ? 2 : 4) * 4 * sb * 260, plan.LogitsBytes);
        // Auto packs tiny-llama's frozen fp32 Linears for MKL (2 x their bytes), as the Trainer will (Training/FrozenWeightPacking).
        long frozen = 4 * ModelShape.Load(Path.Combine(TestPaths.TinyLlama, "config.json")).Modules.Where(m => m.Kind == ModuleKind.Linear).Sum(m => m.WeightElements);
        long packed = CpuRuntime.PacksWeights(null, frozen) ? CpuRuntime.PackedWeightBytes(frozen) : 0;
        Assert.Equal(CpuRuntime.Training(vocabSize: 260).Sum(t => t.Bytes) + packed, plan.FrameworkOverheadBytes);
        var unpacked = RunPlan.For(TestPaths.TinyLlama, new MethodOptions { Method = "lora" }, new TrainerOptions { BatchSize = 3, Device = "cpu", PackFrozenWeights = false }, 50);
        Assert.Equal(plan.TotalBytes - packed, unpacked.TotalBytes);
    }

    /// <summary>peft train plans with its own process's resident set after libtorch loads as the first runtime term;
    /// the measured terms for loading, the .NET heap, malloc arenas, growth and the final save are added to it.</summary>
    [Fact]
    public void Cpu_runtime_allowance_is_the_measured_after_load_figure_plus_the_named_terms()
    {
        var m = new MethodOptions { Method = "qlora" };
        var o = new TrainerOptions { BatchSize = 2, Device = "cpu" };
        var measured = RunPlan.For(TestPaths.TinyLlama, m, o, 20, runtimeAfterLoadBytes: 157_000_000);
        var defaulted = RunPlan.For(TestPaths.TinyLlama, m, o, 20);
        long added = CpuRuntime.LoadingBytes + CpuRuntime.ManagedHeapBytes + CpuRuntime.MallocArenaBytes + CpuRuntime.RunGrowthBytes + CpuRuntime.SaveBytes;
        Assert.Equal(89_000_000, added);
        // On an AMD CPU the engine runs MKL's Intel path, whose multi-threaded GEMMs keep shared buffers.
        if (CpuRuntime.MklIntelPath) added += CpuRuntime.MklIntelPathBytes(260);   // tiny-llama's vocabulary
        // QLoRA keeps lm_head dense: auto packs it for MKL as the Trainer will (a tied head is the embedding: nothing).
        long head = 4 * ModelShape.Load(Path.Combine(TestPaths.TinyLlama, "config.json")).Modules.Where(m => m.Name == "lm_head").Sum(m => m.WeightElements);
        bool packs = CpuRuntime.PacksWeights(null, head);
        if (packs) added += CpuRuntime.PackedWeightBytes(head);
        Assert.Equal(157_000_000 + added, measured.FrameworkOverheadBytes);
        Assert.Equal(CpuRuntime.DefaultAfterLoadBytes + added, defaulted.FrameworkOverheadBytes);
        Assert.Equal(7_000_000, measured.TotalBytes - defaulted.TotalBytes); // the allowance is all that differs
        Assert.Equal(6 + (CpuRuntime.MklIntelPath ? 1 : 0) + (packs ? 1 : 0), measured.RuntimeTerms.Count);
        Assert.Equal(("libtorch + .NET after load", 157_000_000L), (measured.RuntimeTerms[0].Name, measured.RuntimeTerms[0].Bytes));
        Assert.Equal(measured.FrameworkOverheadBytes, measured.RuntimeTerms.Sum(t => t.Bytes));
        // The run report compares the after-load term with the measured runtime; the rest joins activations and buffers.
        Assert.Equal(157_000_000, measured.RuntimeAfterLoadBytes);
        Assert.Equal(added, measured.RuntimeGrowthBytes);
        // The DPO/ORPO plan carries the same allowance.
        Assert.Equal(measured.FrameworkOverheadBytes, RunPlan.ForPreference(TestPaths.TinyLlama, m, o, pairs: 100, 20, 157_000_000).FrameworkOverheadBytes);
    }

    [Fact]
    public void Prompt_tuning_run_counts_its_virtual_tokens_once()
    {
        static TokenSequence Row(int n) => new(new int[n], Enumerable.Repeat(1, n).ToArray());
        var m = new MethodOptions { Method = "prompt", VirtualTokens = 5 };
        var o = new TrainerOptions { BatchSize = 3, MaxSeqLength = 64, Device = "cpu" };
        var plan = RunPlan.For(TestPaths.TinyLlama, m, o, [Row(20), Row(50), Row(10)]);
        Assert.Equal(50, plan.Request.SequenceLength);
        // The logits cover the 50 tokens of the longest row and the 5 virtual ones: 4 fp32 copies (2 with the loss kernel), vocab 260.
        Assert.Equal((ActivationModel.CpuKernels ? 2 : 4) * 4 * 3 * (50 + 5) * 260, plan.LogitsBytes);
        // Capped at the run's maximum length.
        Assert.Equal(64, RunPlan.For(TestPaths.TinyLlama, m, o, [Row(70)]).Request.SequenceLength);
    }

    /// <summary>No batch holds more rows than the data has (BatchLoader), so the plan is of those batches; DPO/ORPO's
    /// batch is chosen + rejected of as many pairs.</summary>
    [Fact]
    public void A_run_over_fewer_rows_than_its_batch_is_planned_at_its_rows()
    {
        static TokenSequence Row(int n) => new(new int[n], Enumerable.Repeat(1, n).ToArray());
        var m = new MethodOptions { Method = "lora" };
        var o = new TrainerOptions { BatchSize = 16, MaxSeqLength = 64, Device = "cpu" };
        Assert.Equal(2, RunPlan.For(TestPaths.TinyLlama, m, o, [Row(20), Row(30)]).Request.BatchSize);
        Assert.Equal(16, RunPlan.For(TestPaths.TinyLlama, m, o, Enumerable.Range(0, 40).Select(_ => Row(20)).ToList()).Request.BatchSize);
        Assert.Equal(6, RunPlan.ForPreference(TestPaths.TinyLlama, m, o, pairs: 3, 20).Request.BatchSize);
        Assert.Equal(32, RunPlan.ForPreference(TestPaths.TinyLlama, m, o, pairs: 100, 20).Request.BatchSize);
    }

    /// <summary>
    /// The buffer cache's slack is planned only where step shapes vary: rows of one length filling every batch with no
    /// evaluation between steps (packed or fixed-length data) reuse the cache's blocks size for size, and at fixed
    /// lengths the 134M QLoRA run used none of the term (plan +11% over the peak with it, bench/plan-vs-measured.sh).
    /// </summary>
    [Fact]
    public void The_allocator_slack_is_planned_only_where_step_shapes_vary()
    {
        if (!CpuRuntime.BufferCache) return; // no cache on this machine: no slack either way
        static TokenSequence Row(int n) => new(new int[n], Enumerable.Repeat(1, n).ToArray());
        static List<TokenSequence> Rows(params int[] lengths) => lengths.Select(Row).ToList();
        var m = new MethodOptions { Method = "lora" };
        var o = new TrainerOptions { BatchSize = 2, MaxSeqLength = 64, Device = "cpu" };
        long Slack(List<TokenSequence> rows, bool evaluates) => RunPlan.For(TestPaths.TinyLlama, m, o, rows, evaluates).AllocatorSlackBytes;
        Assert.Equal(0, Slack(Rows(40, 40, 40, 40), evaluates: false));
        Assert.Equal(0, Slack(Rows(70, 80, 90, 100), evaluates: false));   // all cut to the run's 64 tokens
        long varied = Slack(Rows(40, 30, 40, 40), evaluates: false);
        Assert.True(varied > 0);
        Assert.Equal(varied, Slack(Rows(40, 40, 40, 40), evaluates: true));   // eval passes and generation allocate other sizes
        Assert.Equal(varied, Slack(Rows(40, 40, 40), evaluates: false));      // a last batch of one row
        Assert.Equal(varied, RunPlan.For(TestPaths.TinyLlama, m, o, 40).AllocatorSlackBytes);   // by length alone: assumed to vary
    }
}
