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
}
