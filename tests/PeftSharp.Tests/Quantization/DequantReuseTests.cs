using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Tests.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// The backward of a quantised Linear multiplies by the dense weight its forward kept (DequantReuse) instead of
/// dequantising again: the same gradients bit for bit, fewer dequantisations, within the budget. Each model has its
/// own pool. Serial: the dequantisation counts are process-wide.
/// </summary>
[Collection(SerialCollection.Name)]
public class DequantReuseTests
{
    static (Dictionary<string, Tensor> Grads, DequantStats.Snapshot Stats) Step(CausalLM model, List<TestLora> loras, Tensor ids)
    {
        using var scope = NewDisposeScope();
        foreach (var l in loras) { l.A.grad?.zero_(); l.B.grad?.zero_(); }
        var before = DequantStats.Read();
        var logits = model.Forward(ids);
        nn.functional.cross_entropy(logits.view(-1, logits.shape[2]), ids.view(-1)).backward();
        var stats = DequantStats.Read() - before;
        var grads = loras.SelectMany((l, i) => new[] { ($"{i}.A", l.A.grad!), ($"{i}.B", l.B.grad!) })
            .ToDictionary(g => g.Item1, g => g.Item2.clone().DetachFromDisposeScope());
        return (grads, stats);
    }

    static void AssertBitwiseEqual(Dictionary<string, Tensor> a, Dictionary<string, Tensor> b)
    {
        foreach (var k in a.Keys) Assert.Equal(a[k].bytes.ToArray(), b[k].bytes.ToArray());
    }

    [Fact]
    public void BackwardReusesTheForwardsWeightsWithIdenticalGradients()
    {
        using var model = ModelLoader.Load(QuantizedModelTests.QuantizedTiny());
        manual_seed(5);
        var loras = TestLora.Attach(model, zeroB: false);
        using var ids = randint(0, 260, [2, 7], ScalarType.Int64);
        int layers = model.Layers.Count;
        try
        {
            DequantReuse.KeepLayers(model, 0);
            var (plain, none) = Step(model, loras, ids);
            Assert.Equal(0, none.ReusedCalls);
            Assert.True(none.BackwardCalls > 0);

            // Every layer kept: no backward dequantises, and the gradients do not change by a bit.
            DequantReuse.KeepLayers(model, layers);
            var (all, allStats) = Step(model, loras, ids);
            AssertBitwiseEqual(plain, all);
            Assert.Equal(0, allStats.BackwardCalls);
            Assert.Equal(none.BackwardCalls, allStats.ReusedCalls);
            Assert.Equal(none.ForwardCalls, allStats.ForwardCalls);

            // One layer kept: the newest wins, so the last layer's backward reuses and the rest dequantise again.
            DequantReuse.KeepLayers(model, 1);
            Assert.Equal(DequantReuse.LayerBytes(model, ScalarType.Float32), DequantReuse.BudgetOf(model));
            var (one, oneStats) = Step(model, loras, ids);
            AssertBitwiseEqual(plain, one);
            long perLayer = model.Layers[^1].modules().OfType<TunableLinear>().Count(t => t.Quantized is not null);
            Assert.Equal(perLayer, oneStats.ReusedCalls);
            Assert.Equal(none.BackwardCalls - perLayer, oneStats.BackwardCalls);

            // Under checkpointing one layer is the default and covers every backward: the recomputed layer's.
            GradientCheckpointing.Enable(model);
            var (ckpt, ckptStats) = Step(model, loras, ids);
            Assert.Equal(0, ckptStats.BackwardCalls);
            // Every weight of every layer: the recomputed layer's input is a grad-requiring copy, so layer 0's q/k/v get a backward too.
            Assert.Equal(layers * perLayer, ckptStats.ReusedCalls);
            foreach (var k in plain.Keys) Assert.True(plain[k].allclose(ckpt[k], 1e-5, 1e-7), k);
        }
        finally { GradientCheckpointing.Disable(model); }
    }

    /// <summary>A fresh quantised model with LoRA on every quantised linear, and the weights its backward multiplies by per layer.</summary>
    static (CausalLM Model, List<TestLora> Loras) QloraModel(int seed)
    {
        var model = ModelLoader.Load(QuantizedModelTests.QuantizedTiny());
        return (model, TestLora.Attach(model, zeroB: false, seed: (ulong)seed));
    }

    [Fact]
    public void EachModelHasItsOwnPoolThatCheckpointingSetsAndFrees()
    {
        var (a, aLoras) = QloraModel(5);
        var (b, bLoras) = QloraModel(6);
        bool aDisposed = false;
        using var ids = randint(0, 260, [2, 7], ScalarType.Int64);
        int layers = a.Layers.Count;
        long perLayer = a.Layers[^1].modules().OfType<TunableLinear>().Count(t => t.Quantized is not null);
        try
        {
            // Checkpointing (and its one-layer pool) on a only: b's backward dequantises every weight again.
            GradientCheckpointing.Enable(a);
            var (_, bStats) = Step(b, bLoras, ids);
            Assert.Equal(0, bStats.ReusedCalls);
            Assert.True(bStats.BackwardCalls > 0);
            var (_, aStats) = Step(a, aLoras, ids);
            Assert.Equal(0, aStats.BackwardCalls);
            Assert.Equal(layers * perLayer, aStats.ReusedCalls);

            // Enabled on both, then disabled on b: a keeps its reuse, b's backward dequantises again.
            GradientCheckpointing.Enable(b);
            GradientCheckpointing.Disable(b);
            Assert.Equal(0, DequantReuse.BudgetOf(b));
            (_, aStats) = Step(a, aLoras, ids);
            Assert.Equal(0, aStats.BackwardCalls);
            Assert.Equal(layers * perLayer, aStats.ReusedCalls);
            (_, bStats) = Step(b, bLoras, ids);
            Assert.Equal(0, bStats.ReusedCalls);

            // Disabling frees the kept buffers: a checkpointed step and Disable leave the live tensor count where it was.
            GradientCheckpointing.Disable(a);
            long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
            GradientCheckpointing.Enable(a);
            Step(a, aLoras, ids).Grads.Values.ToList().ForEach(g => g.Dispose());
            GradientCheckpointing.Disable(a);
            Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);

            // Disposing the model frees its pool too (the budget its weights shared drops to 0).
            GradientCheckpointing.Enable(a);
            var pool = DequantReuse.Of(a)!;
            Assert.True(pool.BudgetBytes > 0);
            a.Dispose();
            aDisposed = true;
            Assert.Equal(0, pool.BudgetBytes);
        }
        finally
        {
            if (!aDisposed) a.Dispose();
            b.Dispose();
        }
    }
}
