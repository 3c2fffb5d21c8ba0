using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>Several adapters on one model: switching, deleting, weighted combinations, mixed-adapter batches.</summary>
public class MultiAdapterTests
{
    static string Fixture(string name) => Path.Combine(TestPaths.TinyLlama, "adapters", name);

    [Fact]
    public void SwitchDisableAndDeleteAdapters()
    {
        using var golden = new SafeTensorsFile(Path.Combine(TestPaths.TinyLlama, "golden.safetensors"));
        using var ids = golden.Load("input_ids");
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        PeftAdapterIO.Load(model, Fixture("lora"), "lora");
        PeftAdapterIO.Load(model, Fixture("dora"), "dora");
        var lora = LoraModel.Of(model);
        using var _ = no_grad();
        void Check(string key)
        {
            using var expected = golden.Load(key);
            using var logits = model.Forward(ids);
            Assert.True(TestPaths.RelativeError(logits, expected) <= 1e-5, key);
        }
        Check("logits_dora");                      // the last loaded is active
        lora.SetActive("lora"); Check("logits_lora");
        lora.DisableAll(); Check("logits");
        lora.EnableAll(); Check("logits_lora");
        lora.Delete("lora");
        Assert.Equal(["dora"], lora.Adapters.Keys);
        Assert.All(model.Linears(), l => Assert.False(l.Adapters.ContainsKey("lora")));
        Check("logits");                           // nothing active any more
        lora.SetActive("dora"); Check("logits_dora");
        Assert.Throws<KeyNotFoundException>(() => lora.SetActive("lora"));
    }

    static (CausalLM Model, LoraAdapter A, LoraAdapter B) TwoAdapters(int rankB = 4)
    {
        var model = ModelLoader.Load(TestPaths.TinyLlama);
        var a = LoraInjector.Inject(model, new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = LoraInit.False }, "a", 1);
        var b = LoraInjector.Inject(model, new LoraConfig { R = rankB, LoraAlpha = 4, TargetModules = ["q_proj", "k_proj"], InitLoraWeights = LoraInit.False }, "b", 2);
        return (model, a, b);
    }

    static double[,] Delta(LoraLayer? l, double w, long o, long i)
    {
        var d = new double[o, i];
        if (l is null) return d;
        var a = l.A.detach().to_type(ScalarType.Float64).data<double>().ToArray();
        var b = l.B.detach().to_type(ScalarType.Float64).data<double>().ToArray();
        for (int r = 0; r < o; r++)
            for (int c = 0; c < i; c++)
            {
                double s = 0;
                for (int k = 0; k < l.Rank; k++) s += b[r * l.Rank + k] * a[k * i + c];
                d[r, c] = w * l.Scaling * s;
            }
        return d;
    }

    static Tensor ToTensor(double[,] d) => tensor(d);

    [Fact]
    public void CatCombinationIsTheExactWeightedSumOfDeltas()
    {
        var (model, a, b) = TwoAdapters(rankB: 2);
        using var _m = model;
        var combined = WeightedAdapter.Add(model, ["a", "b"], [0.7, -0.4], "mix", "cat");
        Assert.Equal(6, combined.Config.R);
        Assert.Equal(["model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"],
            combined.Layers.Keys.Where(k => k.Contains("layers.0")).Order());
        foreach (var (path, layer) in combined.Layers)
        {
            long o = layer.B.shape[0], i = layer.A.shape[1];
            var e1 = Delta(a.Layers.GetValueOrDefault(path), 0.7, o, i);
            var e2 = Delta(b.Layers.GetValueOrDefault(path), -0.4, o, i);
            for (int r = 0; r < o; r++) for (int c = 0; c < i; c++) e1[r, c] += e2[r, c];
            using var mine = layer.DeltaWeight().to_type(ScalarType.Float64);
            using var want = ToTensor(e1);
            Assert.True(TestPaths.RelativeError(mine, want) <= 1e-6, path);
        }
        // The new adapter is loaded but not activated (as PEFT).
        Assert.DoesNotContain(model.State.Active, x => x.Name == "mix");
    }

    [Fact]
    public void LinearCombinesAAndBWithSqrtWeights()
    {
        var (model, a, b) = TwoAdapters();
        using var _m = model;
        var combined = WeightedAdapter.Add(model, ["a", "b"], [0.5, 2.0], "lin", "linear");
        Assert.Equal(4, combined.Config.R);
        Assert.Equal(1.0, combined.Layers.Values.First().Scaling);
        string q = "model.layers.1.self_attn.q_proj", v = "model.layers.1.self_attn.v_proj";
        double wa = Math.Sqrt(0.5 * a.Layers[q].Scaling), wb = Math.Sqrt(2.0 * b.Layers[q].Scaling);
        using (var want = a.Layers[q].A.Times(wa).Plus(b.Layers[q].A.Times(wb))) Assert.True(TestPaths.RelativeError(combined.Layers[q].A, want) <= 1e-6);
        using (var want = a.Layers[q].B.Times(wa).Plus(b.Layers[q].B.Times(wb))) Assert.True(TestPaths.RelativeError(combined.Layers[q].B, want) <= 1e-6);
        // A module only one adapter has: that adapter alone, weighted.
        using (var want = a.Layers[v].A.Times(wa)) Assert.True(TestPaths.RelativeError(combined.Layers[v].A, want) <= 1e-6);
    }

    [Fact]
    public void LinearNeedsEqualRanks()
    {
        var (model, _, _) = TwoAdapters(rankB: 2);
        using var _m = model;
        var e = Assert.Throws<ArgumentException>(() => WeightedAdapter.Add(model, ["a", "b"], [1, 1], "x", "linear"));
        Assert.Contains("equal rank", e.Message);
        Assert.Throws<NotSupportedException>(() =>
        {
            PeftAdapterIO.Load(model, Fixture("dora"), "dora");
            WeightedAdapter.Add(model, ["a", "dora"], [1, 1], "y", "cat");
        });
    }

    [Fact]
    public void SvdReproducesPeftsWeightedDeltaAtFullRank()
    {
        var (model, a, b) = TwoAdapters();
        using var _m = model;
        var combined = WeightedAdapter.Add(model, ["a", "b"], [0.5, 1.5], "svd", "svd", svdRank: 8);
        string q = "model.layers.0.self_attn.q_proj";
        // PEFT weights each already-scaled delta by w·s once more.
        var e1 = Delta(a.Layers[q], 0.5 * a.Layers[q].Scaling, 64, 64);
        var e2 = Delta(b.Layers[q], 1.5 * b.Layers[q].Scaling, 64, 64);
        for (int r = 0; r < 64; r++) for (int c = 0; c < 64; c++) e1[r, c] += e2[r, c];
        using var want = ToTensor(e1);
        using var mine = combined.Layers[q].DeltaWeight().to_type(ScalarType.Float64);
        Assert.True(TestPaths.RelativeError(mine, want) <= 1e-5);
    }

    [Fact]
    public void TiesAndDareFollowPeftsDefinitions()
    {
        // Two task vectors, hand-computed TIES at density 0.5 (top-2 by magnitude each), weights 1.
        using var t1 = tensor(new float[] { 3, -1, 0.5f, -4 });
        using var t2 = tensor(new float[] { -2, 2, 1, -0.1f });
        using var ties = MergeMath.Ties([t1, t2], [1, 1], 0.5);
        // pruned: t1 -> [3,0,0,-4], t2 -> [-2,2,0,0]; sums [1,2,0,-4] -> signs [+,+,+,-]
        // kept: [3 (t1 only), 2 (t2), 0, -4] / counts [1,1,(0->1),1]
        Assert.Equal(new float[] { 3, 2, 0, -4 }, ties.data<float>().ToArray());
        using var freq = MergeMath.Ties([t1, t2], [1, 1], 1.0, "frequency");
        // sign counts [0,0,2,-2] -> majority [+,+,+,-]; mean of agreeing: [3, 2, 0.75, -2.05]
        Assert.Equal(new[] { 3, 2, 0.75, -2.05 }, freq.data<float>().Select(x => Math.Round(x, 5)).ToArray());

        using var g = new Generator(1);
        using var big = ones(10000);
        using var dare = MergeMath.DareLinear([big], [1], 0.25, g);
        var vals = dare.data<float>().ToArray();
        Assert.All(vals, x => Assert.True(x == 0 || Math.Abs(x - 4) < 1e-6));
        Assert.InRange(vals.Count(x => x != 0), 2200, 2800);
        using var g2 = new Generator(1);
        using var noDrop = MergeMath.DareLinear([t1, t2], [0.5, 0.5], 1.0, g2);
        using var lin = MergeMath.TaskArithmetic([t1, t2], [0.5, 0.5]);
        Assert.Equal(lin.data<float>().ToArray(), noDrop.data<float>().ToArray());
    }

    [Fact]
    public void WeightedTiesAdapterIsUsable()
    {
        var (model, _, _) = TwoAdapters();
        using var _m = model;
        var t = WeightedAdapter.Add(model, ["a", "b"], [1, 1], "t", "ties", density: 0.5);
        var d = WeightedAdapter.Add(model, ["a", "b"], [1, 1], "d", "dare_linear", density: 0.5);
        // TIES at density 0.5 keeps at most half of each task tensor, so the result has zeros wherever both were pruned.
        Assert.All(t.Layers.Values, l => Assert.True(l.A.EqualTo(0).any().item<bool>()));
        Assert.All(d.Layers.Values, l => Assert.True(l.A.EqualTo(0).any().item<bool>()));
        LoraModel.Of(model).SetActive("d");
        using var _ = no_grad();
        using var ids = tensor(new long[] { 1, 2, 3 }).unsqueeze(0);
        using var logits = model.Forward(ids);
        Assert.False(logits.isnan().any().item<bool>());
    }

    [Fact]
    public void MixedBatchEqualsRowsOneByOne()
    {
        var (model, _, _) = TwoAdapters(rankB: 2);
        using var _m = model;
        PeftAdapterIO.Load(model, Fixture("dora"), "dora");
        using var _ = no_grad();
        using var ids = tensor(new long[] { 5, 9, 33, 2, 71, 140, 7, 250, 1, 2, 3, 4, 9, 8, 7, 6, 100, 101, 102, 103 }).view(5, 4);
        string?[] rows = ["a", "b", null, "a", "dora"];
        var lora = LoraModel.Of(model);
        var single = new List<Tensor>();
        for (int i = 0; i < rows.Length; i++)
        {
            if (rows[i] is { } n) lora.SetActive(n); else lora.DisableAll();
            single.Add(model.Forward(ids[i].unsqueeze(0)));
        }
        lora.EnableAll();
        model.State.RowAdapters = rows;
        using var mixed = model.Forward(ids);
        model.State.RowAdapters = null;
        using var expected = cat(single.ToArray(), 0);
        Assert.True(TestPaths.RelativeError(mixed, expected) <= 1e-6, $"{TestPaths.RelativeError(mixed, expected):E2}");
        foreach (var t in single) t.Dispose();
    }

    [Fact]
    public void GatheredPathHandlesLoraRowsInOneComputation()
    {
        var (model, _, _) = TwoAdapters(rankB: 2);
        using var _m = model;
        var q = model.Layers[0].self_attn.q_proj;
        using var _ = no_grad();
        using var x = randn(3, 5, 64);
        using var y = q.BaseForward(x);
        string?[] rows = ["b", null, "a"];
        using var fast = LoraMixedBatch.Apply(x, y, q, rows);
        Assert.NotNull(fast);
        for (int i = 0; i < 3; i++)
        {
            using var xi = x[i].unsqueeze(0);
            using var yi = y[i].unsqueeze(0);
            using var want = rows[i] is { } n ? q.Adapters[n].Apply(xi, yi, q) : yi.clone();
            Assert.True(TestPaths.RelativeError(fast![i].unsqueeze(0), want) <= 1e-6);
        }
    }
}
