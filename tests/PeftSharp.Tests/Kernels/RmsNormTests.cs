using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Tests.Quantization;
using PeftSharp.Tests.Support;
using static PeftSharp.Tests.Kernels.KernelAssert;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Kernels;

public class RmsNormTests
{

    static RmsNorm Norm(int h, bool plusOne, bool trainWeight, ScalarType dtype = ScalarType.Float32)
    {
        var norm = new RmsNorm("norm", h, 1e-6, dtype, plusOne);
        using (no_grad()) norm.weight.uniform_(plusOne ? -0.5 : 0.5, plusOne ? 0.5 : 1.5);
        norm.weight.requires_grad_(trainWeight);
        return norm;
    }

    /// <summary>HF's RMSNorm in float64: x * rsqrt(mean(x^2) + eps) * (w or 1 + w), with x's and w's gradients.</summary>
    static (Tensor Y, Tensor Dx, Tensor Dw) Reference(Tensor x, Tensor w, Tensor g, bool plusOne)
    {
        var x64 = x.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var w64 = w.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var y = x64 * x64.square().mean([-1L], keepdim: true).Plus(1e-6).rsqrt() * (plusOne ? w64.Plus(1L) : w64);
        y.backward([g.to_type(ScalarType.Float64)]);
        return (y.detach(), x64.grad!, w64.grad!);
    }

    [Theory]
    [InlineData(70, 48, false, true)]      // rows not a multiple of the 16-row block, width 3 vectors (no 32-wide step left)
    [InlineData(1100, 512, false, false)]  // many blocks (18 rows each, the last short), LoRA's frozen weight: no dw
    [InlineData(1100, 512, true, true)]    // Gemma's 1 + w, weight trained
    [InlineData(37, 4096, false, true)]    // a wide row, parallel blocks
    [InlineData(9, 7, false, true)]        // narrower than one vector: the scalar tail alone
    [InlineData(3, 33, true, false)]
    public void OutputAndGradientsMatchFloat64(int rows, int h, bool plusOne, bool trainWeight)
    {
        if (!ElementKernelRuns(RmsNormKernel.Supported)) return;   // neither AVX-512F nor AVX2 + FMA: Applies is false, the op chain runs
        using var scope = NewDisposeScope();
        manual_seed(11);
        var norm = Norm(h, plusOne, trainWeight);
        var x = randn(2, rows, h).Times(3).requires_grad_(true);
        var g = randn(2, rows, h);
        var (f0, b0) = RmsNormFunction.Calls;
        var y = norm.forward(x);
        y.backward([g]);
        Assert.Equal((f0 + 1, b0 + 1), RmsNormFunction.Calls);
        var (ry, rdx, rdw) = Reference(x, norm.weight, g, plusOne);
        Near(ry, y, 1e-5 * 6);
        Near(rdx, x.grad!, 1e-4);
        if (trainWeight) Near(rdw, norm.weight.grad!, 1e-5 * Math.Max(1, rdw.abs().max().item<double>()));
        else Assert.Null(norm.weight.grad);
    }

    /// <summary>
    /// bf16 in and out (bf16 training's norms): output and gradients equal float64's on the same bf16 values to bf16
    /// rounding, and the output equals the op chain's (which rounds at the same places) to one bf16 step at most.
    /// </summary>
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]    // Gemma's 1 + w: one rounding at the end
    [InlineData(false, true)]
    public void Bf16MatchesFloat64AndTheOpChain(bool plusOne, bool trainWeight)
    {
        if (!ElementKernelRuns(RmsNormKernel.Supported)) return;   // neither AVX-512F nor AVX2 + FMA: Applies is false, the op chain runs
        using var scope = NewDisposeScope();
        manual_seed(12);
        var norm = Norm(200, plusOne, trainWeight, ScalarType.BFloat16);
        var x = randn(3, 70, 200).Times(2).to_type(ScalarType.BFloat16).requires_grad_(true);
        var g = randn(3, 70, 200).to_type(ScalarType.BFloat16);
        var (f0, b0) = RmsNormFunction.Calls;
        var y = norm.forward(x);
        y.backward([g]);
        Assert.Equal((f0 + 1, b0 + 1), RmsNormFunction.Calls);
        Assert.Equal(ScalarType.BFloat16, y.dtype);
        Assert.Equal(ScalarType.BFloat16, x.grad!.dtype);
        var (ry, rdx, rdw) = Reference(x, norm.weight, g, plusOne);
        double Scale(Tensor t) => t.abs().max().item<double>();
        Near(ry, y, Scale(ry) / 64);
        Near(rdx, x.grad!, Scale(rdx) / 64);
        if (trainWeight) Near(rdw, norm.weight.grad!, Scale(rdw) / 64);
        Tensor chain;
        using (RmsNormFunction.Off()) chain = norm.forward(x.detach());
        Near(chain, y, Scale(ry) / 128);
    }

    /// <summary>A NaN in a bf16 row makes that row NaN (the rounding keeps NaNs NaN) and leaves the other rows finite.</summary>
    [Fact]
    public void Bf16NaNStaysNaN()
    {
        if (!ElementKernelRuns(RmsNormKernel.Supported)) return;   // neither AVX-512F nor AVX2 + FMA: Applies is false, the op chain runs
        using var scope = NewDisposeScope();
        var norm = Norm(40, plusOne: false, trainWeight: false, ScalarType.BFloat16);
        var x = randn(2, 40).to_type(ScalarType.BFloat16);
        x[0, 3] = tensor(float.NaN).to_type(ScalarType.BFloat16);
        var y = norm.forward(x).to_type(ScalarType.Float32);
        Assert.True(y[0].isnan().all().item<bool>());
        Assert.False(y[1].isnan().any().item<bool>());
    }

    [Fact]
    public void OutputWithoutGradientMatchesAndBuildsNoNode()
    {
        if (!ElementKernelRuns(RmsNormKernel.Supported)) return;   // neither AVX-512F nor AVX2 + FMA: Applies is false, the op chain runs
        using var scope = NewDisposeScope();
        manual_seed(2);
        var norm = Norm(64, plusOne: false, trainWeight: false);
        var x = randn(5, 64);
        var (f0, _) = RmsNormFunction.Calls;
        var y = norm.forward(x);
        Assert.Equal(f0 + 1, RmsNormFunction.Calls.Forward);
        Assert.False(y.requires_grad);
        Near(Reference(x, norm.weight, zeros_like(x), false).Y, y, 1e-5);
    }

    /// <summary>dx and dw are the same bits on one thread and on two (blocks depend on the shape, dw partials summed in block order).</summary>
    [Fact]
    public unsafe void GradientsAreTheSameBitsWhateverTheThreads()
    {
        if (!ElementKernelRuns(RmsNormKernel.Supported)) return;   // neither AVX-512F nor AVX2 + FMA: Applies is false, the op chain runs
        using var scope = NewDisposeScope();
        manual_seed(4);
        const int rows = 1000, h = 96;
        var x = randn(rows, h).contiguous();
        var w = rand(h).Plus(0.5);
        var g = randn(rows, h);
        var rstd = empty(rows);
        var y = empty_like(x);
        RmsNormKernel.Forward(P<F32>(x), P<float>(w), P<F32>(y), P<float>(rstd), rows, h, 1e-6f, roundNormed: false, 1);
        (Tensor Dx, Tensor Dw) Run(int threads)
        {
            var dx = empty_like(x);
            var dw = empty_like(w);
            RmsNormKernel.Backward(P<F32>(x), P<float>(w), P<float>(rstd), P<F32>(g), P<F32>(dx), P<float>(dw), rows, h, threads);
            return (dx, dw);
        }
        var one = Run(1);
        var two = Run(2);
        Assert.True(one.Dx.eq(two.Dx).all().item<bool>());
        Assert.True(one.Dw.eq(two.Dw).all().item<bool>());
    }

    static unsafe T* P<T>(Tensor t) where T : unmanaged => (T*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(t.bytes));

    /// <summary>
    /// The models users train: a Llama with LoRA on every projection and a Gemma 2 (1 + w norms, four per layer); loss and
    /// every adapter gradient with the kernel equal the op chain's to fp32 tolerance, and the kernel really ran once per
    /// norm forward and backward that needs one.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LoraLossAndAdapterGradientsMatchTheOpChain(bool gemma)
    {
        var cfg = gemma ? RandomModel.Gemma2Config(layers: 2) : RandomModel.LlamaConfig(hidden: 48, layers: 2, heads: 4, kvHeads: 2, vocab: 64);
        int vocab = (int)cfg["vocab_size"]!, norms = ElementKernelRuns(RmsNormKernel.Supported) ? (gemma ? 2 * 4 + 1 : 2 * 2 + 1) : 0;
        var dir = RandomModel.Write(cfg);
        using var model = ModelLoader.Load(dir);
        manual_seed(5);
        var adapters = TestLora.Attach(model, zeroB: false);
        using var ids = randint(0, vocab, [2, 19]);
        (double Loss, Tensor[] Grads) Step() => LoraStep(model, adapters, ids);
        var (f0, b0) = RmsNormFunction.Calls;
        var fast = Step();
        var (f1, b1) = RmsNormFunction.Calls;
        // Every norm runs forward; all but layer 0's first backward (its input, the frozen embedding, needs no gradient).
        Assert.Equal((f0 + norms, b0 + Math.Max(0, norms - 1)), (f1, b1));
        (double Loss, Tensor[] Grads) chain;
        using (RmsNormFunction.Off()) chain = Step();
        Assert.Equal((f1, b1), RmsNormFunction.Calls);
        Assert.Equal(chain.Loss, fast.Loss, 5);
        GradsNear(chain.Grads, fast.Grads);
        foreach (var g in fast.Grads.Concat(chain.Grads)) g.Dispose();
    }
}
