using PeftSharp.Memory;

namespace PeftSharp.Memory.Tests;

public class OptimizerAndActivationTests
{
    [Fact]
    public void Optimizer_bytes_per_element()
    {
        Assert.Equal(8000, OptimizerState.Bytes(OptimizerKind.AdamW, 1000));
        Assert.Equal(4000, OptimizerState.Bytes(OptimizerKind.SgdMomentum, 1000));
        Assert.Equal(0, OptimizerState.Bytes(OptimizerKind.Sgd, 1000));
        Assert.Equal(8 * 4095, OptimizerState.Bytes(OptimizerKind.AdamW8bit, 4095)); // small tensors stay 32-bit
        Assert.Equal(2 * 65536 + 2 * 4 * 256, OptimizerState.Bytes(OptimizerKind.AdamW8bit, 65536));
        Assert.Equal(OptimizerState.Bytes(OptimizerKind.AdamW8bit, 9999), OptimizerState.Bytes(OptimizerKind.PagedAdamW8bit, 9999));
    }

    [Fact]
    public void Eager_activations_follow_korthikanti()
    {
        var c = Presets.Config("llama-2-7b");
        long s = 2048, b = 2, h = 4096, a = 32, layers = 32;
        long expected = layers * (s * b * h * 34 + 5 * a * s * s * b);
        Assert.Equal(expected, ActivationModel.Korthikanti.Bytes(c, b, s, AttentionKind.Eager, DType.Bf16, checkpointing: false));
    }

    [Fact]
    public void Fused_attention_drops_the_s_squared_term_and_fp32_doubles()
    {
        var c = Presets.Config("llama-2-7b");
        long s = 1024, b = 1, h = 4096;
        Assert.Equal(32 * s * b * h * 34, ActivationModel.Korthikanti.Bytes(c, b, s, AttentionKind.Fused, DType.Bf16, false));
        Assert.Equal(2 * 32 * s * b * h * 34, ActivationModel.Korthikanti.Bytes(c, b, s, AttentionKind.Fused, DType.Fp32, false));
    }

    [Fact]
    public void Checkpointing_keeps_layer_inputs_plus_one_recomputed_layer()
    {
        var c = Presets.Config("llama-2-7b");
        long s = 1024, b = 4, h = 4096;
        long expected = 32 * 2 * s * b * h + s * b * h * 34;
        Assert.Equal(expected, ActivationModel.Korthikanti.Bytes(c, b, s, AttentionKind.Fused, DType.Bf16, true));
    }

    [Fact]
    public void Activation_constants_can_be_calibrated()
    {
        var c = Presets.Config("smollm2-135m");
        var model = new ActivationModel { PerTokenHidden = 10, PerScore = 0, LossFp32Buffers = 1 };
        Assert.Equal(30L * 100 * 1 * 576 * 10, model.Bytes(c, 1, 100, AttentionKind.Eager, DType.Bf16, false));
        Assert.Equal((2L + 4) * 100 * 49152, model.LossBytes(c, 1, 100, LossKind.Full, DType.Bf16)); // bf16 logits + 1 fp32 buffer
        var plan = MemoryPlanner.Plan(Presets.Shape("smollm2-135m"), new PlanRequest { SequenceLength = 100 }, model);
        Assert.Equal(30L * 100 * 576 * 10, plan.ActivationsBytes);
    }

    [Fact]
    public void Gradient_accumulation_keeps_gradients_through_the_next_forward()
    {
        var one = MemoryPlanner.Plan("smollm2-135m", new PlanRequest());
        var eight = MemoryPlanner.Plan("smollm2-135m", new PlanRequest { GradientAccumulation = 8 });
        // PyTorch frees gradients before each forward; accumulating keeps them, so they add to the activation peak.
        Assert.Equal(0, one.GradientsAtPeakBytes);
        Assert.Equal(one.GradientsBytes, eight.GradientsAtPeakBytes);
        Assert.Equal(one.TotalBytes + one.GradientsBytes + (long)Math.Ceiling(one.GradientsBytes * MemoryPlanner.AllocatorSlackFraction),
            eight.TotalBytes, 1.0);
        var cpuOne = MemoryPlanner.Plan("smollm2-135m", new PlanRequest { Device = DeviceKind.Cpu, WeightDtype = DType.Fp32 });
        var cpuEight = MemoryPlanner.Plan("smollm2-135m", new PlanRequest { Device = DeviceKind.Cpu, WeightDtype = DType.Fp32, GradientAccumulation = 8 });
        Assert.Equal(cpuOne.TotalBytes, cpuEight.TotalBytes); // this project's trainer keeps its gradient buffers
        var batch8 = MemoryPlanner.Plan("smollm2-135m", new PlanRequest { BatchSize = 8 });
        Assert.Equal(8 * one.ActivationsBytes, batch8.ActivationsBytes);
    }

    [Fact]
    public void Cpu_fp32_profile_counts_the_tensors_torchsharp_keeps()
    {
        var c = Presets.Config("smollm2-135m"); // h 576, MLP 1536, 30 layers, 9 heads, vocab 49152
        long s = 100, b = 2, h = 576, i = 1536, layers = 30;
        var cpu = ActivationModel.TorchSharpCpuFp32;
        // fp32: 9 hidden-sized and 4 MLP-sized tensors per layer; no s^2 term even for eager attention.
        long frozen = layers * 4 * (9 * s * b * h + 4 * s * b * i);
        Assert.Equal(frozen, cpu.Bytes(c, b, s, AttentionKind.Eager, DType.Fp32, checkpointing: false));
        // Trained norms keep their two normalised inputs as well.
        long full = frozen + layers * 4 * 2 * s * b * h;
        Assert.Equal(full, cpu.Bytes(c, b, s, AttentionKind.Eager, DType.Fp32, false, baseTrains: true));
        // Checkpointing: one fp32 layer input per layer, plus one layer recomputed.
        long kept = layers * 4 * s * b * h + 4 * (9 * s * b * h + 4 * s * b * i);
        Assert.Equal(kept, cpu.Bytes(c, b, s, AttentionKind.Fused, DType.Fp32, true));
        Assert.Equal(4L * 4 * b * s * 49152, cpu.LossBytes(c, b, s, LossKind.Full, DType.Fp32));
    }

    [Fact]
    public void Cpu_fp32_kernels_profile_counts_the_tensors_the_kernels_keep()
    {
        var c = Presets.Config("smollm2-135m"); // h 576, MLP 1536, 30 layers, 9 heads, vocab 49152
        long s = 100, b = 2, h = 576, i = 1536, layers = 30;
        var cpu = ActivationModel.TorchSharpCpuFp32Kernels;
        // The attention output is o_proj's input (8 hidden-sized tensors, k and v of them at the 3 key/value heads' width
        // 192: the kernel reads grouped k/v as they are); SwiGLU keeps gate and up (3 MLP-sized).
        long frozen = layers * 4 * (6 * s * b * h + 2 * s * b * 192 + 3 * s * b * i);
        Assert.Equal(frozen, cpu.Bytes(c, b, s, AttentionKind.Eager, DType.Fp32, checkpointing: false));
        // The RMSNorm kernel's weight gradient needs no normalised copy.
        Assert.Equal(frozen, cpu.Bytes(c, b, s, AttentionKind.Eager, DType.Fp32, false, baseTrains: true));
        // The loss kernel: the fp32 logits and their gradient, no log-softmax.
        Assert.Equal(2L * 4 * b * s * 49152, cpu.LossBytes(c, b, s, LossKind.Full, DType.Fp32));
    }

    [Fact]
    public void Planner_uses_the_cpu_profiles_on_cpu_by_compute_dtype()
    {
        var cpuFp32 = new PlanRequest { Device = DeviceKind.Cpu, WeightDtype = DType.Fp32, SequenceLength = 64, Method = TuningMethod.Full };
        var c = Presets.Config("smollm2-135m");
        long s = 64, h = 576, i = 1536;
        // Where PeftSharp's AVX-512 kernels run (this machine has AVX-512F), the kernels' profiles.
        bool k = ActivationModel.CpuKernels;
        Assert.Same(k ? ActivationModel.TorchSharpCpuFp32Kernels : ActivationModel.TorchSharpCpuFp32, ActivationModel.For(cpuFp32));
        Assert.Equal(k ? 30 * 4 * (6 * s * h + 2 * s * 192 + 3 * s * i) : 30 * 4 * (11 * s * h + 4 * s * i), MemoryPlanner.Plan("smollm2-135m", cpuFp32).ActivationsBytes);
        Assert.Equal((k ? 2L : 4L) * 4 * s * 49152, MemoryPlanner.Plan("smollm2-135m", cpuFp32).LogitsBytes);
        Assert.Same(ActivationModel.Transformers, ActivationModel.For(cpuFp32 with { Device = DeviceKind.Cuda }));
        var bf16 = k ? ActivationModel.TorchSharpCpuBf16Kernels : ActivationModel.TorchSharpCpuBf16;
        Assert.Same(bf16, ActivationModel.For(cpuFp32 with { WeightDtype = DType.Bf16 }));
        Assert.Same(bf16, ActivationModel.For(cpuFp32 with { ComputeDtype = DType.Bf16 }));
        // fp16: the kernels do not take it, the op chain's profile.
        Assert.Same(ActivationModel.TorchSharpCpuBf16, ActivationModel.For(cpuFp32 with { ComputeDtype = DType.Fp16 }));
        // On CUDA, full fine-tuning uses the transformers profile with the trained base's extra inputs.
        Assert.Equal(ActivationModel.Transformers.Bytes(c, 1, s, AttentionKind.Fused, DType.Fp32, false, baseTrains: true),
            MemoryPlanner.Plan("smollm2-135m", cpuFp32 with { Device = DeviceKind.Cuda }).ActivationsBytes);
    }
}
