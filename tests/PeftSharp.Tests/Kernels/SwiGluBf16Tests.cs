using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using PeftSharp.Tests.Training;
using Xunit.Abstractions;
using static PeftSharp.Tests.Kernels.KernelAssert;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Kernels;

/// <summary>
/// The SwiGLU kernel on bf16 tensors (`--compute-dtype bf16`): widened to fp32, act(g) rounded to bf16 before the product
/// as HF's bf16 model rounds it, the gradients rounded once. Checked against float64 and against what the model ran
/// before (libtorch's bf16 silu / tanh-gelu ops and the product), and through the bf16 model training builds.
/// </summary>
[Collection(SerialCollection.Name)]
public class SwiGluBf16Tests(ITestOutputHelper output)
{
    /// <summary>act(g) * u and its gradients by libtorch's bf16 ops and autograd (the model's path without the kernel).</summary>
    static (Tensor H, Tensor Dg, Tensor Du) Bf16Ops(Tensor g, Tensor u, Tensor dh, bool gelu)
    {
        var (g16, u16) = (g.detach().clone().requires_grad_(true), u.detach().clone().requires_grad_(true));
        Tensor h;
        using (SwiGlu.Off())
        {
            var act = gelu ? nn.functional.gelu(g16, TorchSharp.Modules.GELU.Approximate.tanh) : nn.functional.silu(g16);
            h = act * u16;
        }
        h.backward([dh]);
        return (h.detach(), g16.grad!, u16.grad!);
    }

    /// <summary>The same in float64 on the same bf16 values.</summary>
    static (Tensor H, Tensor Dg, Tensor Du) Float64(Tensor g, Tensor u, Tensor dh, bool gelu)
    {
        var g64 = g.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var u64 = u.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var h = (gelu ? nn.functional.gelu(g64, TorchSharp.Modules.GELU.Approximate.tanh) : nn.functional.silu(g64)) * u64;
        h.backward([dh.to_type(ScalarType.Float64)]);
        return (h.detach(), g64.grad!, u64.grad!);
    }

    /// <summary>
    /// bf16 gate, up and gradient: the kernel runs (forward and backward counted), its output and gradients are bf16,
    /// within one bf16 rounding of float64 and, summed over h, dg and du, no further from it than libtorch's bf16 ops
    /// (it rounds dg once where the ops round dh * u first; h and du round as the ops do). Columns with a tail,
    /// several row blocks, both activations.
    /// </summary>
    [Theory]
    [InlineData(3, 5, 37, false)]
    [InlineData(3, 5, 37, true)]
    [InlineData(2, 700, 48, false)]
    [InlineData(2, 700, 48, true)]
    public void Bf16IsAtLeastAsCloseToFloat64AsTheBf16Ops(int b, int t, int inter, bool gelu)
    {
        if (!ElementKernelRuns(SwiGluKernel.Supported)) return;   // neither AVX-512F nor AVX2 + FMA: Applies is false, the op chain runs
        using var scope = NewDisposeScope();
        manual_seed(13);
        var g = randn(b, t, inter).Times(4).to_type(ScalarType.BFloat16).requires_grad_(true);
        var u = randn(b, t, inter).to_type(ScalarType.BFloat16).requires_grad_(true);
        var dh = randn(b, t, inter).to_type(ScalarType.BFloat16);
        Assert.True(SwiGlu.Applies(g));
        var (f0, b0) = SwiGlu.Calls;
        var h = SwiGlu.Compute(g, u, gelu);
        h.backward([dh]);
        Assert.Equal((f0 + 1, b0 + 1), SwiGlu.Calls);
        var kernel = new[] { h, g.grad!, u.grad! };
        foreach (var x in kernel) Assert.Equal(ScalarType.BFloat16, x.dtype);
        var (rh, rdg, rdu) = Float64(g, u, dh, gelu);
        var (oh, odg, odu) = Bf16Ops(g, u, dh, gelu);
        var refs = new[] { rh, rdg, rdu };
        var ops = new[] { oh, odg, odu };
        var names = new[] { "h", "dg", "du" };
        double sumKernel = 0, sumOps = 0;
        for (int i = 0; i < 3; i++)
        {
            double ours = TestPaths.RelativeError(kernel[i], refs[i]), theirs = TestPaths.RelativeError(ops[i], refs[i]);
            output.WriteLine($"{names[i]}: kernel {ours:E3}, bf16 ops {theirs:E3} relative to float64");
            Assert.True(ours < 4e-3, $"{names[i]}: {ours:E3} is more than one bf16 rounding away");   // 2^-9 is one half-ulp
            (sumKernel, sumOps) = (sumKernel + ours, sumOps + theirs);
        }
        Assert.True(sumKernel <= sumOps, $"kernel {sumKernel:E3} vs bf16 ops {sumOps:E3} (summed relative errors)");
    }

    /// <summary>Phi-3's fused gate_up [.., 2 I] in bf16: the same values as the two halves, the gradient as one tensor.</summary>
    [Fact]
    public void Bf16FusedGateUpEqualsTheTwoHalves()
    {
        if (!ElementKernelRuns(SwiGluKernel.Supported)) return;   // neither AVX-512F nor AVX2 + FMA: Applies is false, the op chain runs
        using var scope = NewDisposeScope();
        manual_seed(14);
        var gu = randn(2, 9, 2 * 21).Times(3).to_type(ScalarType.BFloat16).requires_grad_(true);
        var dh = randn(2, 9, 21).to_type(ScalarType.BFloat16);
        var h = SwiGlu.ComputeFused(gu, false);
        h.backward([dh]);
        var g = gu.detach().narrow(-1, 0, 21).contiguous().requires_grad_(true);
        var u = gu.detach().narrow(-1, 21, 21).contiguous().requires_grad_(true);
        var h2 = SwiGlu.Compute(g, u, false);
        h2.backward([dh]);
        Assert.True(h.eq(h2).all().item<bool>(), "fused output differs from the two halves'");
        Assert.True(gu.grad!.eq(cat([g.grad!, u.grad!], -1)).all().item<bool>(), "fused gradient differs from the two halves'");
    }

    /// <summary>
    /// bf16 training takes the kernel (forward and backward once per layer), and its loss and fp32 adapter gradients are
    /// as close to the fp32 model's (same weights, fp32 everywhere) as the bf16 ops path's, within bf16 precision; two
    /// runs give the same bits. Llama (silu), Phi-3 (fused gate_up) and Gemma 2 (gelu_pytorch_tanh).
    /// </summary>
    [Theory]
    [MemberData(nameof(SwiGluTests.Families), MemberType = typeof(SwiGluTests))]
    public void Bf16LoraTrainingTakesTheKernelAsCloseToFp32AsTheOpsPath(string family)
    {
        int runs = ElementKernelRuns(SwiGluKernel.Supported) ? 2 : 0;
        var cfg = SwiGluTests.Config(family);
        int vocab = (int)cfg["vocab_size"]!;
        var dir = RandomModel.Write(cfg);
        var (model, lora) = MixedPrecisionLora.Build(dir, ScalarType.BFloat16, family == "phi3" ? "qkv_proj,gate_up_proj,down_proj" : "q_proj,v_proj,gate_proj,up_proj,down_proj");
        var (m32, l32) = MixedPrecisionLora.Build(dir, ScalarType.Float32, family == "phi3" ? "qkv_proj,gate_up_proj,down_proj" : "q_proj,v_proj,gate_proj,up_proj,down_proj");
        using var _m = model;
        using var _m32 = m32;
        manual_seed(6);
        using var ids = randint(0, vocab, [2, 45]);
        var fp32 = MixedPrecisionLora.Step(m32, l32, ids);
        var (f0, b0) = SwiGlu.Calls;
        var fast = MixedPrecisionLora.Step(model, lora, ids);
        Assert.Equal((f0 + runs, b0 + runs), SwiGlu.Calls);
        var again = MixedPrecisionLora.Step(model, lora, ids);
        (float Loss, Tensor[] Grads) ops;
        using (SwiGlu.Off()) ops = MixedPrecisionLora.Step(model, lora, ids);
        output.WriteLine($"loss: fp32 {fp32.Loss:F6}, bf16 kernel {fast.Loss:F6}, bf16 ops {ops.Loss:F6}");
        Assert.True(Math.Abs(fast.Loss / fp32.Loss - 1) < 0.01, $"loss {fast.Loss} vs fp32 {fp32.Loss}");
        double worst = 0, sumKernel = 0, sumOps = 0;
        for (int i = 0; i < fast.Grads.Length; i++)
        {
            Assert.Equal(ScalarType.Float32, fast.Grads[i].dtype);
            Assert.True(fast.Grads[i].eq(again.Grads[i]).all().item<bool>(), $"gradient {i} differs between runs");
            double k = TestPaths.RelativeError(fast.Grads[i], fp32.Grads[i]), s = TestPaths.RelativeError(ops.Grads[i], fp32.Grads[i]);
            output.WriteLine($"adapter gradient {i}: relative error to fp32: kernel {k:E3}, ops {s:E3}");
            (worst, sumKernel, sumOps) = (Math.Max(worst, k), sumKernel + k, sumOps + s);
        }
        Assert.True(worst < 0.2, $"worst adapter gradient relative error {worst}");
        Assert.True(sumKernel <= 1.1 * sumOps, $"mean adapter gradient error: kernel {sumKernel / fast.Grads.Length:E3}, ops {sumOps / fast.Grads.Length:E3}");
        foreach (var g in fast.Grads.Concat(again.Grads).Concat(ops.Grads).Concat(fp32.Grads)) g.Dispose();
    }
}
