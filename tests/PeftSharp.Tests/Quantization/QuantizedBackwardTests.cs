using PeftSharp.Models;
using PeftSharp.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

public class QuantizedBackwardTests
{
    [Fact]
    public void GradientReachesTheInputThroughTheDequantisedWeight()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        using var w = Nf4Weight.FromDense(randn(48, 64).Times(0.05));
        var x = randn(2, 3, 64).requires_grad_(true);
        var r = randn(2, 3, 48);
        var y = w.Linear(x, ScalarType.Float32);
        (y * r).sum().backward();

        // Independent: the dequantised weight as a constant, grad_x = r W, summed by hand in double.
        var wd = w.Dequantize(ScalarType.Float32, CPU).to_type(ScalarType.Float64);
        var expected = zeros(2, 3, 64, ScalarType.Float64);
        for (int o = 0; o < 48; o++) expected = expected.Plus(r.to_type(ScalarType.Float64)[.., .., o].unsqueeze(-1) * wd[o]);
        Assert.True(TestPaths.MaxAbsError(x.grad!, expected) <= 1e-5);
        Assert.True(TestPaths.MaxAbsError(y, nn.functional.linear(x, wd.to_type(ScalarType.Float32))) <= 1e-5);
    }

    [Fact]
    public void StackedQuantisedLayersOfDifferentShapesGiveTheDenseGradients()
    {
        // The dense weight is rebuilt per call in one reused buffer: layer 1's backward runs after layer 2's forward
        // and backward overwrote it, so a stale or shared buffer would give wrong gradients here.
        using var scope = NewDisposeScope();
        manual_seed(6);
        using var w1 = Nf4Weight.FromDense(randn(96, 64).Times(0.05));
        using var w2 = Nf4Weight.FromDense(randn(32, 96).Times(0.05));
        var x = randn(2, 5, 64).requires_grad_(true);
        var r = randn(2, 5, 32);
        var y = w2.Linear(nn.functional.silu(w1.Linear(x, ScalarType.Float32)), ScalarType.Float32);
        (y * r).sum().backward();

        var xd = x.detach().clone().requires_grad_(true);
        var d1 = w1.Dequantize(ScalarType.Float32, CPU);
        var d2 = w2.Dequantize(ScalarType.Float32, CPU);
        var yd = nn.functional.linear(nn.functional.silu(nn.functional.linear(xd, d1)), d2);
        (yd * r).sum().backward();
        Assert.Equal(yd.data<float>().ToArray(), y.data<float>().ToArray());
        Assert.Equal(xd.grad!.data<float>().ToArray(), x.grad!.data<float>().ToArray());
    }

    [Fact]
    public void TheBackwardLeavesNoGradientPerQuantisedLinearInTheStepsScope()
    {
        // TorchSharp runs a CPU custom backward inside the caller's dispose scope: a gradient handed in or returned
        // there would stay alive (and hold its memory) until the step ends, one pair per quantised linear, where
        // native autograd frees each as soon as the next node has used it. Through a QLoRA model's backward, the live
        // tensors the backward adds must not grow with the number of quantised linears (one kept for the next call).
        using var model = ModelLoader.Load(QuantizedModelTests.QuantizedTiny());
        manual_seed(2);
        TestLora.Attach(model, zeroB: false);
        int quantised = model.Linears().Count(l => l.Quantized is not null);
        Assert.True(quantised >= 7, $"{quantised} quantised linears");
        var ids = randint(0, 260, [2, 7], ScalarType.Int64);
        using var step = NewDisposeScope();
        var loss = model.Forward(ids).square().mean();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        loss.backward();
        long added = DisposeScopeManager.Statistics.ThreadTotalLiveCount - before;
        Assert.True(added <= 2, $"the backward left {added} tensors alive in the step's scope ({quantised} quantised linears)");
    }

    [Fact]
    public void QloraGradientsFlowToAdaptersButTheBaseHasNoParameterToUpdate()
    {
        using var scope = NewDisposeScope();
        using var model = ModelLoader.Load(QuantizedModelTests.QuantizedTiny());
        manual_seed(2);
        var loras = TestLora.Attach(model, zeroB: false);
        var ids = randint(0, 260, [2, 7], ScalarType.Int64);
        model.Forward(ids).square().mean().backward();
        Assert.All(loras, l => Assert.True(l.A.grad is { } g && g.abs().sum().item<float>() > 0));
        Assert.All(model.Linears().Where(l => l.Quantized is not null), l => Assert.Null(l.weight));
        Assert.All(model.parameters(), p => Assert.Null(p.grad));
    }
}
