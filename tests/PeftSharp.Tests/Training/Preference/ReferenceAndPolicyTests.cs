using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Training.Methods;
using PeftSharp.Training.Preference;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training.Preference;

/// <summary>
/// DPO's reference without a second model: the same model with the adapter off (or a frozen copy of the initial adapter)
/// must be exactly the reference model, and a fresh LoRA (B = 0) starts with policy = reference.
/// </summary>
public class ReferenceAndPolicyTests
{
    static readonly PreferencePair[] Pairs =
    [
        new([new TextSegment("abc ->", false)], [new TextSegment(" yes", true)], [new TextSegment(" no", true)], "t:1"),
        new([new TextSegment("hello there ->", false)], [new TextSegment(" hi!", true)], [new TextSegment(" go away", true)], "t:2"),
        new([new TextSegment("q ->", false)], [new TextSegment(" 42", true)], [new TextSegment(" 41 or so", true)], "t:3"),
    ];

    static List<TokenizedPair> Tokenized(TextTokenizer tok) => PreferenceData.Tokenize(Pairs, tok, 64).Pairs;

    static MethodOptions Lora(LoraInit init = LoraInit.True) => new() { Method = "lora", Rank = 4, Alpha = 8, Init = init };

    /// <summary>Stands in for a trained adapter: B random instead of PEFT's zero init, so the adapter changes the output.</summary>
    static void Perturb(IEnumerable<(string Name, TorchSharp.Modules.Parameter P)> ps)
    {
        using var noGrad = no_grad();
        var g = new Generator(11);
        foreach (var (name, p) in ps.Where(p => p.Name.Contains("lora_B"))) p.copy_(randn(p.shape, p.dtype, generator: g).Times(0.5));
    }

    static double[] Values(Tensor t) => t.to_type(ScalarType.Float64).data<double>().ToArray();

    [Fact]
    public void FreshLoraStartsAtPolicyEqualsReference_LossLog2_MarginsZero_OnlyBGetsGradient()
    {
        using var tok = TextTokenizer.FromFolder(TestPaths.TinyLlama);
        var (model, method, reference) = PreferenceSetup.Create(TestPaths.TinyLlama, Lora(), null, tok, CPU, seed: 3);
        using var _ = model;
        var objective = new PreferenceObjective(new PreferenceOptions { Beta = 0.1 }, reference);
        var pairs = Tokenized(tok);
        var metrics = new PairMetrics();
        using var loss = objective.Loss(model, method, pairs, tok.EosId ?? 0, pairs.Count, 1, metrics);
        Assert.Equal(Math.Log(2), loss.item<float>(), 6);
        Assert.Equal(0.0, metrics.RewardMargin, 6);
        Assert.Equal(0.0, metrics.RewardAccuracy);   // ties are not wins, as in TRL
        loss.backward();
        var grads = method.TrainableParameters.ToList();
        // B = 0 blocks the gradient to A; B's gradient is −β/2 · d(margin)/dB, not zero: DPO moves away from the reference.
        Assert.All(grads.Where(p => p.Name.Contains("lora_A")), p => Assert.Equal(0.0, p.P.grad!.abs().max().item<float>()));
        Assert.Contains(grads.Where(p => p.Name.Contains("lora_B")), p => p.P.grad!.abs().max().item<float>() > 0);
    }

    [Fact]
    public void AdapterOffIsExactlyTheBaseModel_AndThePolicyIsRestoredAfterwards()
    {
        using var tok = TextTokenizer.FromFolder(TestPaths.TinyLlama);
        var (model, method, reference) = PreferenceSetup.Create(TestPaths.TinyLlama, Lora(), null, tok, CPU, seed: 3);
        using var _ = model;
        Perturb(method.TrainableParameters);
        using var plain = ModelLoader.Load(TestPaths.TinyLlama);
        var pairs = Tokenized(tok);
        using var batch = PreferenceObjective.PairBatch(pairs, CPU, tok.EosId ?? 0);
        using var noGrad = no_grad();
        using var refLogps = reference.Logps(batch, average: false);
        using var baseLogits = plain.Forward(batch.InputIds, attentionMask: batch.AttentionMask);
        using var baseLogps = PreferenceLoss.SequenceLogps(baseLogits, batch.Labels);
        Assert.Equal(Values(baseLogps), Values(refLogps));   // bit for bit
        using var policyLogits = method.Forward(model, batch.InputIds, batch.AttentionMask);
        using var policyLogps = PreferenceLoss.SequenceLogps(policyLogits, batch.Labels);
        Assert.NotEqual(Values(baseLogps), Values(policyLogps));   // the (perturbed) adapter is active again

        // With the reference equal to the policy's own adapter switched off, DPO on adapters disabled is log 2 exactly.
        model.State.Disabled = true;
        var metrics = new PairMetrics();
        using var loss = new PreferenceObjective(new PreferenceOptions(), reference).Loss(model, method, pairs, tok.EosId ?? 0, pairs.Count, 1, metrics);
        model.State.Disabled = false;
        Assert.Equal(Math.Log(2), loss.item<float>(), 6);
        Assert.Equal(0.0, metrics.RewardMargin);
    }

    [Fact]
    public void InitAdapterIsContinuedAndAFrozenCopyIsTheReference()
    {
        using var tok = TextTokenizer.FromFolder(TestPaths.TinyLlama);
        string sft = Path.Combine(TestPaths.TempDir(), "sft");
        using (var m = ModelLoader.Load(TestPaths.TinyLlama))
        {
            var a = LoraInjector.Inject(m, MethodFactory.LoraConfigFor(Lora(), TestPaths.TinyLlama), "default", seed: 9);
            Perturb(a.PeftNamedParameters().Select(p => (p.Key, p.Param)));
            PeftAdapterIO.Save(m, "default", sft);
        }
        var (model, method, reference) = PreferenceSetup.Create(TestPaths.TinyLlama, Lora(), sft, tok, CPU);
        using var _ = model;
        Assert.Equal(PreferenceSetup.ReferenceAdapter, reference.FrozenAdapter);
        var pairs = Tokenized(tok);
        using var batch = PreferenceObjective.PairBatch(pairs, CPU, tok.EosId ?? 0);

        // The reference is base + the SFT adapter, as applied by `peft eval --adapter`.
        using var withSft = ModelLoader.Load(TestPaths.TinyLlama);
        PeftAdapterIO.Load(withSft, sft);
        using (no_grad())
        {
            using var refLogps = reference.Logps(batch, average: false);
            using var sftLogits = withSft.Forward(batch.InputIds, attentionMask: batch.AttentionMask);
            using var sftLogps = PreferenceLoss.SequenceLogps(sftLogits, batch.Labels);
            Assert.Equal(Values(sftLogps), Values(refLogps));
            using var baseLogits = ModelLoader.Load(TestPaths.TinyLlama).Forward(batch.InputIds, attentionMask: batch.AttentionMask);
            using var baseLogps = PreferenceLoss.SequenceLogps(baseLogits, batch.Labels);
            Assert.NotEqual(Values(baseLogps), Values(refLogps));   // not merely the base
        }
        // The policy starts as that adapter (loss log 2) and trains it; the reference copy has no trainable parameter.
        var metrics = new PairMetrics();
        using var loss = new PreferenceObjective(new PreferenceOptions(), reference).Loss(model, method, pairs, tok.EosId ?? 0, pairs.Count, 1, metrics);
        Assert.Equal(Math.Log(2), loss.item<float>(), 6);
        Assert.NotEmpty(method.TrainableParameters);
        Assert.All(LoraModel.Of(model).Get(PreferenceSetup.ReferenceAdapter).Parameters(), p => Assert.False(p.requires_grad));
    }
}
