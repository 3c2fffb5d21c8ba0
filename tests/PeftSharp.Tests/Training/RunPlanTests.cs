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
        // tiny-llama: h 64, MLP 176, 2 layers, vocab 260; fp32, 9 hidden- and 4 MLP-sized tensors per layer, 4 logits copies.
        long sb = 3 * 50;
        Assert.Equal(2 * 4 * (9 * sb * 64 + 4 * sb * 176), plan.ActivationsBytes);
        Assert.Equal(4 * 4 * sb * 260, plan.LogitsBytes);
        Assert.Equal(PlanRequest.DefaultCpuOverheadBytes, plan.FrameworkOverheadBytes);
    }

    [Fact]
    public void Prompt_tuning_run_counts_its_virtual_tokens_once()
    {
        static TokenSequence Row(int n) => new(new int[n], Enumerable.Repeat(1, n).ToArray());
        var m = new MethodOptions { Method = "prompt", VirtualTokens = 5 };
        var o = new TrainerOptions { BatchSize = 3, MaxSeqLength = 64, Device = "cpu" };
        var plan = RunPlan.For(TestPaths.TinyLlama, m, o, [Row(20), Row(50)]);
        Assert.Equal(50, plan.Request.SequenceLength);
        // The logits cover the 50 tokens of the longest row and the 5 virtual ones: 4 fp32 copies, vocab 260.
        Assert.Equal(4 * 4 * 3 * (50 + 5) * 260, plan.LogitsBytes);
        // Capped at the run's maximum length.
        Assert.Equal(64, RunPlan.For(TestPaths.TinyLlama, m, o, [Row(70)]).Request.SequenceLength);
    }
}
