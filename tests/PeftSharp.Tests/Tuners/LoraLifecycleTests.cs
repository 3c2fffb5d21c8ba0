using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>Initialisation, freezing, dropout, merge and unmerge.</summary>
public class LoraLifecycleTests
{
    static Tensor Ids() => tensor(new long[] { 5, 9, 33, 2, 71, 140, 7, 250 }).view(2, 4);

    static Tensor Logits(CausalLM model)
    {
        using var _ = no_grad();
        using var ids = Ids();
        return model.Forward(ids);
    }

    [Theory]
    [InlineData(LoraInit.True)]
    [InlineData(LoraInit.Gaussian)]
    public void FreshLoraGivesExactlyTheBaseLogits(LoraInit init)
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        using var before = Logits(model);
        var adapter = LoraInjector.Inject(model, new LoraConfig { R = 8, TargetModulesRegex = "all-linear", InitLoraWeights = init }, "default", 1);
        using var after = Logits(model);
        Assert.Equal(0.0, TestPaths.MaxAbsError(before, after));
        // A is random, B is zero: the identity comes from B alone.
        foreach (var l in adapter.Layers.Values)
        {
            Assert.True(l.A.abs().max().item<float>() > 0);
            Assert.Equal(0f, l.B.abs().max().item<float>());
        }
        var a = adapter.Layers["model.layers.0.self_attn.q_proj"].A;
        if (init == LoraInit.True) Assert.True(a.abs().max().item<float>() <= 1 / MathF.Sqrt(64) + 1e-6f);
        else Assert.InRange(a.std().item<float>(), 0.08f, 0.17f); // N(0, 1/r) std, r = 8
    }

    [Fact]
    public void FreshDoraAndPissaKeepTheBaseFunction()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        using var before = Logits(model);
        using var q0 = model.Layers[0].self_attn.q_proj.weight!.detach().clone();
        LoraInjector.Inject(model, new LoraConfig { R = 4, UseDora = true, TargetModules = ["k_proj", "down_proj"] }, "dora", 1);
        using (var dora = Logits(model)) Assert.True(TestPaths.RelativeError(dora, before) <= 1e-6);
        var pissa = LoraInjector.Inject(model, new LoraConfig { R = 4, LoraAlpha = 4, TargetModules = ["q_proj"], InitLoraWeights = LoraInit.Pissa }, "pissa", 1);
        using (var p = Logits(model)) Assert.True(TestPaths.RelativeError(p, before) <= 1e-5);
        // PiSSA: B·A is the rank-4 principal part of W and the base now holds the residual.
        var l = pissa.Layers["model.layers.0.self_attn.q_proj"];
        using var _ = no_grad();
        using var residual = model.Layers[0].self_attn.q_proj.weight!.detach().clone();
        Assert.True(TestPaths.RelativeError(residual.Plus(l.B.matmul(l.A)), q0) <= 1e-5);
        var (_, s, _) = linalg.svd(q0, fullMatrices: false);
        using var resSv = linalg.svdvals(residual);
        Assert.True(Math.Abs(resSv[0].item<float>() - s[4].item<float>()) <= 1e-4 * s[4].item<float>());
    }

    [Fact]
    public void OnlyAdapterParametersRequireGrad()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var adapter = LoraInjector.Inject(model, new LoraConfig { R = 2, UseDora = true, TargetModules = ["q_proj", "v_proj"] }, "default", 1);
        Assert.All(model.parameters(), p => Assert.False(p.requires_grad));
        var trainable = LoraInjector.TrainableParameters(model, "default").ToList();
        Assert.Equal(3 * adapter.Layers.Count, trainable.Count);
        Assert.All(trainable, p => Assert.True(p.requires_grad));
        // Gradients reach A (B is zero at init so dL/dA = 0; B and m get them).
        using var ids = Ids();
        using var loss = model.Forward(ids).square().mean();
        loss.backward();
        var l = adapter.Layers["model.layers.1.self_attn.v_proj"];
        Assert.True(l.B.grad!.abs().sum().item<float>() > 0);
        Assert.True(l.Magnitude!.grad!.abs().sum().item<float>() > 0);
        Assert.Null(model.Layers[1].self_attn.v_proj.weight!.grad);
    }

    [Fact]
    public void DropoutOnlyInTrainingMode()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        LoraInjector.Inject(model, new LoraConfig { R = 4, LoraDropout = 0.5, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = LoraInit.False }, "default", 1);
        using var a = Logits(model);
        using var b = Logits(model);
        Assert.Equal(0.0, TestPaths.MaxAbsError(a, b));
        model.train();
        using var c = Logits(model);
        Assert.True(TestPaths.MaxAbsError(a, c) > 1e-4);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MergeMatchesUnmergedAndUnmergeRestoresTheBase(bool dora)
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var originals = model.Linears().ToDictionary(l => l.ModulePath, l => l.weight!.detach().clone());
        var adapter = LoraInjector.Inject(model, new LoraConfig { R = 4, UseDora = dora, TargetModulesRegex = "all-linear", InitLoraWeights = LoraInit.False }, "default", 1);
        if (dora) LoraReferenceTests.PerturbMagnitudes(adapter);
        using var unmerged = Logits(model);
        var lora = LoraModel.Of(model);
        lora.Merge("default");
        Assert.All(model.Linears().Where(l => l.ModulePath != "lm_head"), l => Assert.Equal("default", l.MergedAdapter));
        using var merged = Logits(model);
        Assert.True(TestPaths.RelativeError(merged, unmerged) <= 1e-5, $"merged vs unmerged {TestPaths.RelativeError(merged, unmerged):E2}");
        Assert.True(TestPaths.RelativeError(model.Layers[0].mlp.up_proj.weight!, originals["model.layers.0.mlp.up_proj"]) > 1e-3);
        lora.Unmerge("default");
        foreach (var l in model.Linears())
            Assert.True(TestPaths.RelativeError(l.weight!, originals[l.ModulePath]) <= 1e-6, l.ModulePath);
        using var again = Logits(model);
        Assert.True(TestPaths.RelativeError(again, unmerged) <= 1e-6);
        foreach (var t in originals.Values) t.Dispose();
    }

    [Fact]
    public void WeightedActiveAdapterScalesItsEffectAndMergesTheSame()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        using var baseLogits = Logits(model);
        LoraInjector.Inject(model, new LoraConfig { R = 4, TargetModules = ["q_proj", "v_proj", "up_proj"], InitLoraWeights = LoraInit.False }, "a", 1);
        var lora = LoraModel.Of(model);
        using var full = Logits(model);
        lora.SetActive([("a", 0.5)]);
        using var half = Logits(model);
        lora.Merge("a");
        using var mergedHalf = Logits(model);
        Assert.True(TestPaths.RelativeError(mergedHalf, half) <= 1e-5);
        lora.Unmerge("a");
        using var restored = Logits(model);
        Assert.True(TestPaths.RelativeError(restored, half) <= 1e-5);
        Assert.True(TestPaths.RelativeError(half, full) > 1e-4 && TestPaths.RelativeError(half, baseLogits) > 1e-4);
    }

    [Fact]
    public void MergedAdapterIsNotAppliedTwiceAndCannotBeDeleted()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        LoraInjector.Inject(model, new LoraConfig { R = 4, TargetModules = ["q_proj"], InitLoraWeights = LoraInit.False }, "a", 1);
        var lora = LoraModel.Of(model);
        lora.Merge("a");
        Assert.Throws<InvalidOperationException>(() => lora.Merge("a"));
        Assert.Throws<InvalidOperationException>(() => lora.Delete("a"));
        lora.Unmerge("a");
        lora.MergeAndUnload("a");
        Assert.Empty(lora.Adapters);
        Assert.Empty(lora.Merged);
        Assert.All(model.Linears(), l => Assert.Null(l.MergedAdapter));
    }
}
