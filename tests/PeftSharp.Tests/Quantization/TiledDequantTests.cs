using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// On CPU a quantised weight larger than one dequantisation tile is multiplied a tile of rows at a time (forward: its
/// columns of y; backward: grad_x accumulated over row tiles). The results must be those of the whole dense weight
/// within fp32 matmul rounding, at shapes with a partial last tile and tiles that start inside a row's blocks.
/// </summary>
public class TiledDequantTests
{
    static long DenseBytes(IQuantizedWeight w) => w.Shape[0] * w.Shape[1] * 4;

    [Theory]
    [InlineData(1100, 640)]    // 2.8 MB: over one 2 MiB tile; tiles of 1 MiB a thread for two threads (4 tiles of 275 rows)
    [InlineData(600, 1200)]    // 1200 values a row are 18.75 blocks of 64: a tile is a multiple of 4 rows, the last one partial
    public void OutputAndInputGradientEqualTheWholeDenseWeights(int outFeatures, int inFeatures)
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        using var w = Nf4Weight.FromDense(randn(outFeatures, inFeatures).Times(0.05));
        Assert.True(DenseBytes(w) > QuantizedLinearFunction.TileBytes, "the weight must span more than one tile");
        var x = randn(2, 9, inFeatures).requires_grad_(true);
        var r = randn(2, 9, outFeatures);
        var y = w.Linear(x, ScalarType.Float32);
        (y * r).sum().backward();

        var dense = w.Dequantize(ScalarType.Float32, CPU);
        var xd = x.detach().clone().requires_grad_(true);
        var yd = nn.functional.linear(xd, dense);
        (yd * r).sum().backward();
        Assert.Equal(yd.shape, y.shape);
        Assert.True(TestPaths.RelativeError(y, yd) <= 1e-6, $"forward: {TestPaths.RelativeError(y, yd)}");
        Assert.True(TestPaths.RelativeError(x.grad!, xd.grad!) <= 1e-6, $"grad_x: {TestPaths.RelativeError(x.grad!, xd.grad!)}");
    }

    [Fact]
    public void Bf16ComputeTilesTheForwardAndMultipliesTheBackwardByTheWholeWeight()
    {
        using var scope = NewDisposeScope();
        manual_seed(12);
        using var w = Nf4Weight.FromDense(randn(2200, 640).Times(0.05));    // 2.8 MB in bf16: three tiles
        Assert.True(DenseBytes(w) / 2 > QuantizedLinearFunction.TileBytes, "the bf16 weight must span more than one tile");
        var x = randn(2, 9, 640).to_type(ScalarType.BFloat16).requires_grad_(true);
        var r = randn(2, 9, 2200).to_type(ScalarType.BFloat16);
        var y = w.Linear(x, ScalarType.BFloat16);
        (y * r).sum().backward();

        var dense = w.Dequantize(ScalarType.BFloat16, CPU);
        var xd = x.detach().clone().requires_grad_(true);
        var yd = nn.functional.linear(xd, dense);
        (yd * r).sum().backward();
        Assert.Equal(ScalarType.BFloat16, y.dtype);
        Assert.True(TestPaths.RelativeError(y, yd) <= 4e-3, $"forward: {TestPaths.RelativeError(y, yd)}");
        Assert.True(TestPaths.RelativeError(x.grad!, xd.grad!) <= 4e-3, $"grad_x: {TestPaths.RelativeError(x.grad!, xd.grad!)}");
    }

    [Fact]
    public void AQloraModelWithWeightsOverATileTrainsLikeItsDequantisedDenseTwin()
    {
        // gate/up [2400, 256] and down [256, 2400] hold 2.4 MB each in fp32: tiles of 1024 rows / 108 rows (a row of
        // 2400 values ends inside a 64-value block, so a tile is an even number of rows), the last one partial.
        var cfg = RandomModel.LlamaConfig(hidden: 256, layers: 2, heads: 4, kvHeads: 2, vocab: 64, intermediate: 2400);
        string denseDir = RandomModel.Write(cfg);
        string qDir = Path.Combine(TestPaths.TempDir(), "q");
        ModelQuantizer.QuantizeFolder(denseDir, qDir, new Nf4Options());
        using var q = ModelLoader.Load(qDir);
        Assert.Contains(q.Linears(), l => l.Quantized is { } w && DenseBytes(w) > QuantizedLinearFunction.TileBytes);
        using var d = ModelLoader.Load(QuantizedModelTests.DequantizedFolder(q, denseDir));

        // Twin adapters from a generator of their own: the global one is shared with tests running in parallel.
        var lq = TestLora.Attach(q, zeroB: false, seed: 4);
        var ld = TestLora.Attach(d, zeroB: false, seed: 4);
        using var scope = NewDisposeScope();
        var ids = randint(0, 64, [2, 9], ScalarType.Int64);
        Tensor Loss(CausalLM m, out Tensor logits)
        {
            logits = m.Forward(ids);
            return nn.functional.cross_entropy(logits.view(-1, logits.shape[2]), ids.view(-1));
        }
        Loss(q, out var logitsQ).backward();
        Loss(d, out var logitsD).backward();

        Assert.True(TestPaths.RelativeError(logitsQ, logitsD) <= 1e-5, $"logits: {TestPaths.RelativeError(logitsQ, logitsD)}");
        // LoRA gradients of every layer: the lower layers' ones only see the loss through the base's grad_x.
        foreach (var (a, b) in lq.Zip(ld))
        {
            Assert.True(TestPaths.RelativeError(a.A.grad!, b.A.grad!) <= 1e-4, $"A: {TestPaths.RelativeError(a.A.grad!, b.A.grad!)}");
            Assert.True(TestPaths.RelativeError(a.B.grad!, b.B.grad!) <= 1e-4, $"B: {TestPaths.RelativeError(a.B.grad!, b.B.grad!)}");
        }
    }
}
