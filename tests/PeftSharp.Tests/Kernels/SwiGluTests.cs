using System.Text.Json.Nodes;
using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Tests.Quantization;
using PeftSharp.Tests.Support;
using static PeftSharp.Tests.Kernels.KernelAssert;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Kernels;

public class SwiGluTests
{
    /// <summary>act(g) * u in float64 with libtorch's own silu / gelu(approximate="tanh") and autograd.</summary>
    static (Tensor H, Tensor Dg, Tensor Du) Reference(Tensor g, Tensor u, Tensor dh, bool gelu)
    {
        var g64 = g.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var u64 = u.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var act = gelu ? nn.functional.gelu(g64, TorchSharp.Modules.GELU.Approximate.tanh) : nn.functional.silu(g64);
        var h = act * u64;
        h.backward([dh.to_type(ScalarType.Float64)]);
        return (h.detach(), g64.grad!, u64.grad!);
    }


    [Theory]
    [InlineData(3, 5, 37, false)]      // columns: two full vectors and a tail of 5
    [InlineData(3, 5, 37, true)]
    [InlineData(1, 1, 7, false)]       // a tail alone
    [InlineData(2, 700, 48, true)]     // several row blocks
    [InlineData(2, 700, 48, false)]
    public void OutputAndGradientsMatchFloat64(int b, int t, int inter, bool gelu)
    {
        if (!ElementKernelRuns(SwiGluKernel.Supported)) return;   // neither AVX-512F nor AVX2 + FMA: Applies is false, the op chain runs
        using var scope = NewDisposeScope();
        manual_seed(3);
        // Values out to +-12 reach both saturated ends of the sigmoid.
        var g = randn(b, t, inter).Times(4).requires_grad_(true);
        var u = randn(b, t, inter).requires_grad_(true);
        var dh = randn(b, t, inter);
        var (f0, b0) = SwiGlu.Calls;
        var h = SwiGlu.Compute(g, u, gelu);
        h.backward([dh]);
        Assert.Equal((f0 + 1, b0 + 1), SwiGlu.Calls);
        var (rh, rdg, rdu) = Reference(g, u, dh, gelu);
        Near(rh, h, 1e-5);
        Near(rdg, g.grad!, 1e-5);
        Near(rdu, u.grad!, 1e-5);
    }

    /// <summary>Phi-3's fused gate_up [.., 2 I]: the same values as the two halves, the gradient as one tensor.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void FusedGateUpMatchesFloat64(bool gelu)
    {
        if (!ElementKernelRuns(SwiGluKernel.Supported)) return;   // neither AVX-512F nor AVX2 + FMA: Applies is false, the op chain runs
        using var scope = NewDisposeScope();
        manual_seed(4);
        var gu = randn(2, 9, 2 * 21).Times(3).requires_grad_(true);
        var dh = randn(2, 9, 21);
        var h = SwiGlu.ComputeFused(gu, gelu);
        h.backward([dh]);
        var (rh, rdg, rdu) = Reference(gu.narrow(-1, 0, 21), gu.narrow(-1, 21, 21), dh, gelu);
        Near(rh, h, 1e-5);
        Near(cat([rdg, rdu], -1), gu.grad!, 1e-5);
    }

    public static TheoryData<string> Families => ["llama", "phi3", "gemma2"];

    internal static JsonObject Config(string family) => family switch
    {
        "phi3" => RandomModel.Phi3Config(),                    // fused gate_up, silu
        "gemma2" => RandomModel.Gemma2Config(layers: 2),      // gelu_pytorch_tanh
        _ => RandomModel.LlamaConfig(hidden: 64, layers: 2, intermediate: 72),
    };

    /// <summary>
    /// The model users train, LoRA on every projection (MLP included): the loss and every adapter gradient with the
    /// kernel equal libtorch's ops to fp32 tolerance, and the kernel ran once per layer each way; run twice, the same bits.
    /// </summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void LoraLossAndAdapterGradientsMatchTheOpsPath(string family)
    {
        int runs = ElementKernelRuns(SwiGluKernel.Supported) ? 2 : 0;
        var cfg = Config(family);
        int vocab = (int)cfg["vocab_size"]!;
        using var model = ModelLoader.Load(RandomModel.Write(cfg));
        manual_seed(5);
        var adapters = TestLora.Attach(model, zeroB: false);
        using var ids = randint(0, vocab, [2, 23]);
        (double Loss, Tensor[] Grads) Step() => LoraStep(model, adapters, ids);
        var (f0, b0) = SwiGlu.Calls;
        var fast = Step();
        Assert.Equal((f0 + runs, b0 + runs), SwiGlu.Calls);
        var again = Step();
        (double Loss, Tensor[] Grads) ops;
        using (SwiGlu.Off()) ops = Step();
        Assert.Equal((f0 + 2 * runs, b0 + 2 * runs), SwiGlu.Calls);
        Assert.Equal(ops.Loss, fast.Loss, 1e-5);
        GradsNear(ops.Grads, fast.Grads);
        for (int i = 0; i < fast.Grads.Length; i++)
            Assert.True(fast.Grads[i].eq(again.Grads[i]).all().item<bool>(), $"gradient {i} differs between runs");
        foreach (var g in fast.Grads.Concat(again.Grads).Concat(ops.Grads)) g.Dispose();
    }

    /// <summary>Gradient checkpointing recomputes each layer inside backward: the kernel runs there too, to the same bits.</summary>
    [Fact]
    public void CheckpointedGradientsAreTheSameBits()
    {
        using var model = ModelLoader.Load(RandomModel.Write(RandomModel.LlamaConfig(hidden: 64, layers: 2, intermediate: 72)));
        manual_seed(4);
        var adapters = TestLora.Attach(model, zeroB: false);
        using var ids = randint(0, 50, [2, 30]);
        Tensor[] Grads() => LoraStep(model, adapters, ids).Grads;
        int perPass = ElementKernelRuns(SwiGluKernel.Supported) ? 2 : 0;
        var plain = Grads();
        PeftSharp.Quantization.GradientCheckpointing.Enable(model);
        var (f0, b0) = SwiGlu.Calls;
        var ckpt = Grads();
        Assert.Equal((f0 + 2 * perPass, b0 + perPass), SwiGlu.Calls);   // forward + recompute, one backward
        PeftSharp.Quantization.GradientCheckpointing.Disable(model);
        for (int i = 0; i < plain.Length; i++) Assert.True(plain[i].eq(ckpt[i]).all().item<bool>(), $"gradient {i} differs");
        foreach (var g in plain.Concat(ckpt)) g.Dispose();
    }
}
