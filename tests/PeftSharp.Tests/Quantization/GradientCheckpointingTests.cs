using PeftSharp.Models;
using PeftSharp.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

public class GradientCheckpointingTests
{
    static Dictionary<string, Tensor> Grads(CausalLM model, IEnumerable<(string, TorchSharp.Modules.Parameter)> trainable, Tensor ids, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        foreach (var (_, p) in trainable) p.grad?.zero_();
        var logits = model.Forward(ids, attentionMask: mask);
        nn.functional.cross_entropy(logits.view(-1, logits.shape[2]), ids.view(-1)).backward();
        return trainable.ToDictionary(t => t.Item1, t => t.Item2.grad!.clone().DetachFromDisposeScope());
    }

    static void AssertSameGrads(Dictionary<string, Tensor> a, Dictionary<string, Tensor> b)
    {
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var k in a.Keys)
            Assert.True(a[k].allclose(b[k], 1e-5, 1e-7), $"{k}: max diff {TestPaths.MaxAbsError(a[k], b[k])}");
    }

    [Fact]
    public void DenseModelGradientsAreTheSameWithAndWithoutCheckpointing()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var trainable = model.named_parameters().Where(p => p.name.Contains("layernorm") || p.name.Contains("layers.1.self_attn.q_proj") || p.name.Contains("layers.0.mlp.up_proj"))
            .Select(p => (p.name, p.parameter)).ToList();
        foreach (var (_, p) in trainable) p.requires_grad = true;
        manual_seed(9);
        using var ids = randint(0, 260, [2, 9], ScalarType.Int64);
        using var mask = ones(2, 9, ScalarType.Int64);
        mask[0, 0] = 0; mask[0, 1] = 0; // left padding: the mask must survive until backward

        var plain = Grads(model, trainable, ids, mask);
        GradientCheckpointing.Enable(model);
        Assert.True(GradientCheckpointing.IsEnabled(model));
        var ckpt = Grads(model, trainable, ids, mask);
        AssertSameGrads(plain, ckpt);
        GradientCheckpointing.Disable(model);
        Assert.False(GradientCheckpointing.IsEnabled(model));
        Assert.Same(CausalLM.DefaultLayerRunner, model.LayerRunner);
    }

    [Fact]
    public void SlidingWindowSurvivesCheckpointing()
    {
        // Window 4 over 12 tokens on every Mistral layer: the checkpointed forward and its recomputation must both
        // use the windowed mask (the logits match the float64 reference, the gradients the plain run's).
        var cfg = PeftSharp.Tests.Support.RandomModel.LlamaConfig(modelType: "mistral");
        cfg["sliding_window"] = 4;
        string dir = PeftSharp.Tests.Support.RandomModel.Write(cfg);
        using var model = ModelLoader.Load(dir);
        var trainable = model.named_parameters().Where(p => p.name.Contains("layernorm")).Select(p => (p.name, p.parameter)).ToList();
        foreach (var (_, p) in trainable) p.requires_grad = true;
        manual_seed(3);
        using var ids = randint(0, 50, [2, 12], ScalarType.Int64);
        var plain = Grads(model, trainable, ids, null);
        GradientCheckpointing.Enable(model);
        var ckpt = Grads(model, trainable, ids, null);
        AssertSameGrads(plain, ckpt);
        var row = ids[0].data<long>().Select(x => (int)x).ToArray();
        using (var scope = NewDisposeScope())
        {
            var logits = model.Forward(ids.narrow(0, 0, 1))[0];   // grad enabled: the checkpointed path
            var expected = tensor(new PeftSharp.Tests.Support.ReferenceLlama(dir).Forward(row));
            Assert.True(TestPaths.RelativeError(logits.detach(), expected) < 1e-5);
        }
        GradientCheckpointing.Disable(model);
    }

    [Fact]
    public void QloraGradientsAreTheSameWithCheckpointingAndLiveTensorsStayFlat()
    {
        using var model = ModelLoader.Load(QuantizedModelTests.QuantizedTiny());
        manual_seed(4);
        var loras = TestLora.Attach(model, zeroB: false);
        var trainable = loras.SelectMany((l, i) => new[] { ($"{i}.A", l.A), ($"{i}.B", l.B) }).ToList();
        using var ids = randint(0, 260, [2, 6], ScalarType.Int64);
        var plain = Grads(model, trainable, ids, null);
        GradientCheckpointing.Enable(model);
        var ckpt = Grads(model, trainable, ids, null);
        AssertSameGrads(plain, ckpt);

        var live = new List<long>();
        for (int step = 0; step < 4; step++)
        {
            foreach (var t in Grads(model, trainable, ids, null).Values) t.Dispose();
            GC.Collect();
            GC.WaitForPendingFinalizers();
            live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        }
        Assert.True(live.Distinct().Count() == 1, $"live tensors per step: {string.Join(", ", live)}");
    }
}
