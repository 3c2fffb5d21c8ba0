using PeftSharp.Kernels;
using PeftSharp.Tests.Support;
using PeftSharp.Training;
using static PeftSharp.Tests.Kernels.KernelAssert;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Kernels;

public class CrossEntropyTests
{
    /// <summary>
    /// Against libtorch's cross_entropy in float64 (sum, ignore_index -100): the loss and the logits' gradient, for a
    /// vocabulary with a tail past the last 16 lanes, rows ignored, and a loss scaled on the way back (as the trainer's
    /// 1 / target count does).
    /// </summary>
    [Theory]
    [InlineData(37, 53)]
    [InlineData(40, 4096)]
    [InlineData(3, 5)]
    public void LossAndGradientMatchFloat64(int rows, int vocab)
    {
        if (!ElementKernelRuns(CrossEntropyKernel.Supported)) return;   // neither AVX-512F nor AVX2 + FMA: Applies is false, the op chain runs
        using var scope = NewDisposeScope();
        manual_seed(2);
        var logits = randn(rows, vocab).Times(5).requires_grad_(true);
        var targets = randint(0, vocab, [rows], ScalarType.Int64);
        targets[0] = tensor(-100L);
        if (rows > 10) targets.narrow(0, 5, 4).FillWith(-100L);
        var (f0, b0) = CrossEntropy.Calls;
        var loss = CrossEntropy.Sum(logits, targets);
        loss.Times(0.37).backward();
        Assert.Equal((f0 + 1, b0 + 1), CrossEntropy.Calls);
        var x64 = logits.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var reference = nn.functional.cross_entropy(x64, targets, ignore_index: -100, reduction: nn.Reduction.Sum);
        reference.Times(0.37).backward();
        Assert.Equal(reference.item<double>(), loss.item<float>(), 1e-5 * Math.Max(1, reference.item<double>()));
        double err = TestPaths.MaxAbsError(x64.grad!, logits.grad!.to_type(ScalarType.Float64));
        Assert.True(err <= 1e-6, $"gradient max abs error {err}");
        Assert.True(logits.grad![0].EqualTo(0).all().item<bool>(), "an ignored row has a gradient");
    }

    [Fact]
    public void LabelOutsideTheVocabularyIsNamed()
    {
        if (!ElementKernelRuns(CrossEntropyKernel.Supported)) return;   // neither AVX-512F nor AVX2 + FMA: Applies is false, the op chain runs
        using var scope = NewDisposeScope();
        var e = Assert.Throws<ArgumentException>(() => CrossEntropy.Sum(randn(4, 10), tensor(new long[] { 1, 2, 10, 3 })));
        Assert.Contains("label 10", e.Message);
    }

    /// <summary>
    /// The trainer's loss (CausalLmLoss: labels shifted, -100 masked, logits read in place) with the kernel equals
    /// libtorch's path, value and logits gradient, and the kernel ran; twice, the same bits.
    /// </summary>
    [Fact]
    public void CausalLmLossMatchesLibtorchsPath()
    {
        using var scope = NewDisposeScope();
        manual_seed(6);
        var labels = randint(0, 70, [3, 19], ScalarType.Int64);
        labels[1].narrow(0, 12, 7).FillWith(-100L);
        (float Loss, Tensor Grad) Run()
        {
            var logits = randn(3, 19, 70, generator: new TorchSharp.torch.Generator(11)).requires_grad_(true);
            var loss = CausalLmLoss.Sum(logits, labels);
            loss.backward();
            return (loss.item<float>(), logits.grad!);
        }
        int runs = ElementKernelRuns(CrossEntropyKernel.Supported) ? 1 : 0;
        var (f0, b0) = CrossEntropy.Calls;
        var fast = Run();
        var again = Run();
        Assert.Equal((f0 + 2 * runs, b0 + 2 * runs), CrossEntropy.Calls);
        (float Loss, Tensor Grad) ops;
        using (CrossEntropy.Off()) ops = Run();
        Assert.Equal(ops.Loss, fast.Loss, 1e-4);
        Assert.True(TestPaths.MaxAbsError(ops.Grad, fast.Grad) <= 1e-6);
        Assert.Equal(fast.Loss, again.Loss);
        Assert.True(fast.Grad.eq(again.Grad).all().item<bool>());
    }
}
