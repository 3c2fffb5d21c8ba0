using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Contracts;

/// <summary>
/// What every registered tuning method promises (PEFT's PeftCommonTester), through the public front door. The theory
/// runs over <see cref="PeftMethods.All"/>, so a new registration is tested without touching this file; LoRA also
/// runs as DoRA (a LoRA config variant with its own forward and merge maths).
/// </summary>
public class PeftMethodContractTests
{
    const string Dora = "LORA+use_dora";

    public static TheoryData<string> Methods()
    {
        var data = new TheoryData<string>();
        foreach (var m in PeftMethods.All) data.Add(m.PeftType);
        data.Add(Dora);
        return data;
    }

    static IPeftConfig ConfigFor(string method) => method == Dora
        ? (LoraConfig)LoraMethod.Instance.DefaultConfig with { UseDora = true }
        : PeftMethods.ForPeftType(method, "test").DefaultConfig;

    static IPeftMethod MethodOf(string method) => method == Dora ? LoraMethod.Instance : PeftMethods.ForPeftType(method, "test");

    static Tensor Ids() => tensor(new long[] { 5, 17, 42, 99, 3, 250, 8, 61, 7, 120 }).reshape(2, 5);

    static Tensor Logits(PeftModel model)
    {
        using var _ = no_grad();
        using var ids = Ids();
        return model.Forward(ids);
    }

    /// <summary>Moves every adapter parameter off its init (LoRA's B starts at zero), so the checks below see a real adapter.</summary>
    static void Perturb(IPeftAdapter adapter, int seed = 11)
    {
        using var g = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (_, p) in adapter.NamedParameters())
            using (var noise = randn(p.shape, p.dtype, p.device, generator: g))
                p.PlusInPlace(ScalarArgs.With(0.05, s => noise.mul_(s)));
    }

    static bool BitEqual(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.equal(b).all().item<bool>();

    [Theory]
    [MemberData(nameof(Methods))]
    public void FreshAdapterKeepsTheBaseOutputsWherePromised(string method)
    {
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama);
        using var baseLogits = Logits(model);
        model.AddAdapter("fresh", ConfigFor(method), seed: 1);
        using var fresh = Logits(model);
        Assert.Equal(baseLogits.shape, fresh.shape);
        if (MethodOf(method).FreshAdapterIsIdentity)
            Assert.True(TestPaths.RelativeError(fresh, baseLogits) <= 1e-6, $"{method}: a fresh adapter changed the outputs");
        else // prompt tuning: the virtual tokens condition every position, and the logits are still those of the real tokens
            Assert.True(TestPaths.RelativeError(fresh, baseLogits) > 1e-4, $"{method}: a fresh soft prompt left the outputs unchanged");
    }

    [Theory]
    [MemberData(nameof(Methods))]
    public void SaveThenLoadIsBitExact(string method)
    {
        string dir = Path.Combine(TestPaths.TempDir(), "adapter");
        Tensor trained;
        Dictionary<string, float[]> saved;
        using (var model = PeftModel.FromPretrained(TestPaths.TinyLlama))
        {
            var adapter = model.AddAdapter("a", ConfigFor(method), seed: 2);
            Perturb(adapter);
            trained = Logits(model);
            saved = adapter.NamedParameters().ToDictionary(p => p.Key, p => p.Param.detach().data<float>().ToArray());
            model.SaveAdapter("a", dir);
        }
        using (trained)
        using (var reloaded = PeftModel.FromPretrained(TestPaths.TinyLlama, adapter: dir))
        {
            var adapter = reloaded.GetAdapter(PeftModel.DefaultAdapterName);
            Assert.Equal(MethodOf(method), adapter.Method);
            var loaded = adapter.NamedParameters().ToDictionary(p => p.Key, p => p.Param.detach().data<float>().ToArray());
            Assert.Equal(saved.Keys.Order(), loaded.Keys.Order());
            foreach (var (k, v) in saved) Assert.True(v.SequenceEqual(loaded[k]), $"{method}: parameter {k} changed in the round trip");
            using var again = Logits(reloaded);
            Assert.True(BitEqual(again, trained), $"{method}: reloaded logits differ");
        }
    }

    [Theory]
    [MemberData(nameof(Methods))]
    public void DisablingAdaptersGivesTheBase(string method)
    {
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama);
        using var baseLogits = Logits(model);
        Perturb(model.AddAdapter("a", ConfigFor(method), seed: 3));
        using var adapted = Logits(model);
        Assert.True(TestPaths.RelativeError(adapted, baseLogits) > 1e-4, $"{method}: the perturbed adapter must change the outputs");
        using (model.DisableAdapters())
        {
            using var disabled = Logits(model);
            Assert.True(BitEqual(disabled, baseLogits), $"{method}: disabled adapters still change the outputs");
        }
        using var enabled = Logits(model);
        Assert.True(BitEqual(enabled, adapted));
    }

    [Theory]
    [MemberData(nameof(Methods))]
    public void MergeEqualsUnmergedOrIsRefusedUntouched(string method)
    {
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama);
        var adapter = model.AddAdapter("a", ConfigFor(method), seed: 4);
        Perturb(adapter);
        using var unmerged = Logits(model);
        if (adapter.CannotMergeReason is null)
        {
            model.MergeAndUnload();
            Assert.Empty(model.AdapterNames);
            using var merged = Logits(model);
            Assert.True(TestPaths.RelativeError(merged, unmerged) <= 1e-5, $"{method}: merged logits differ from unmerged");
        }
        else
        {
            var e = Assert.Throws<NotSupportedException>(model.MergeAndUnload);
            Assert.Contains("'a'", e.Message);
            Assert.Equal(["a"], model.AdapterNames);
            using var after = Logits(model);
            Assert.True(BitEqual(after, unmerged), $"{method}: a refused merge changed the model");
        }
    }

    [Theory]
    [MemberData(nameof(Methods))]
    public void OneTrainingStepChangesOnlyAdapterParameters(string method)
    {
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama);
        var baseBefore = model.BaseModel.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        var adapter = model.AddAdapter("a", ConfigFor(method), seed: 5);
        var adapterBefore = adapter.NamedParameters().ToDictionary(p => p.Key, p => p.Param.detach().clone());
        var trainable = adapter.NamedParameters().Select(p => p.Param).Where(p => p.requires_grad).ToList();
        Assert.NotEmpty(trainable);
        model.Train();
        using (var optimizer = TorchSharp.torch.optim.SGD(trainable, 0.5))
        using (var ids = Ids())
        using (var logits = model.Forward(ids))
        {
            // Next-token cross-entropy of the sequence itself.
            using var loss = nn.functional.cross_entropy(logits.narrow(1, 0, 4).reshape(-1, logits.shape[2]), ids.narrow(1, 1, 4).reshape(-1));
            loss.backward();
            optimizer.step();
        }
        model.Eval();
        foreach (var (name, p) in model.BaseModel.named_parameters())
            Assert.True(BitEqual(p.detach(), baseBefore[name]), $"{method}: base parameter {name} changed");
        Assert.Contains(adapter.NamedParameters(), p => !BitEqual(p.Param.detach(), adapterBefore[p.Key]));
        foreach (var t in baseBefore.Values.Concat(adapterBefore.Values)) t.Dispose();
    }

    [Theory]
    [MemberData(nameof(Methods))]
    public void PlannerCountFromTheConfigEqualsTheAttachedTrainableParameters(string method)
    {
        var shape = PeftSharp.Memory.ModelShape.Load(TestPaths.TinyLlama);
        long planned = MethodOf(method).TrainableParameterCount(shape, ConfigFor(method));
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama);
        var adapter = model.AddAdapter("a", ConfigFor(method));
        long attached = adapter.NamedParameters().Where(p => p.Param.requires_grad).Sum(p => p.Param.numel());
        Assert.True(attached > 0);
        Assert.Equal(attached, planned);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LoraDropoutIsActiveInTrainAndInactiveInEval(bool dora)
    {
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama);
        // init_lora_weights=false: B is not zero, so dropout on the LoRA input shows in the outputs.
        model.AddAdapter("a", new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "v_proj"], LoraDropout = 0.5, UseDora = dora, InitLoraWeights = LoraInit.False });
        model.Train();
        using (var a = Logits(model))
        using (var b = Logits(model))
            Assert.False(BitEqual(a, b), "train(): two forwards with lora_dropout=0.5 must differ");
        model.Eval();
        using (var a = Logits(model))
        using (var b = Logits(model))
            Assert.True(BitEqual(a, b), "eval(): dropout must be off");
    }

    [Fact]
    public void ModelsLoadInEvalMode()
    {
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama);
        model.AddAdapter("a", new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["q_proj"], LoraDropout = 0.5, InitLoraWeights = LoraInit.False });
        using var a = Logits(model);
        using var b = Logits(model);
        Assert.True(BitEqual(a, b));
    }
}
