using PeftSharp.Data;
using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Tests.Training;
using PeftSharp.Training.Methods;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Kernels;

/// <summary>
/// Frozen weights packed for MKL (Kernels/PackedGemm, PackedLinear) through the paths users take: the Trainer packs
/// them for its steps (`--pack-weights`), a merge drops them, and the packed product equals libtorch's linear.
/// </summary>
[Collection(SerialCollection.Name)]
public class PackedLinearTests
{
    static readonly TextTokenizer Tok = TextTokenizer.Load(TestPaths.TinyLlama);

    static (Dictionary<string, float[]> Adapter, double Loss, long Forwards, long Backwards, bool PackedAfter) Train(string dir, bool pack)
    {
        string data = ReversalTask.Write(dir, 8);
        var o = new TrainerOptions
        {
            OutDir = Path.Combine(dir, $"out-{pack}"), LearningRate = 1e-2, Schedule = LrScheduleKind.Constant, WarmupSteps = 0,
            BatchSize = 4, MaxSeqLength = 32, Seed = 5, MaxSteps = 3, PackFrozenWeights = pack,
        };
        var (model, method) = MethodFactory.Create(TestPaths.TinyLlama, new MethodOptions { Method = "lora", Rank = 4, Alpha = 8 }, Tok, CPU, seed: 3);
        using var _ = model;
        var before = PackedLinear.Calls;
        var result = new Trainer(model, method, o, Tok.EosId).Train(TrainingData.Load(data, Tok, o.MaxSeqLength, o.Packing));
        var after = PackedLinear.Calls;
        var adapter = LoraModel.Of(model).Get("default").PeftNamedParameters().ToDictionary(p => p.Key, p => p.Param.detach().data<float>().ToArray());
        return (adapter, result.LastLoss, after.Forward - before.Forward, after.Backward - before.Backward, model.Linears().Any(l => l.IsPacked));
    }

    [Fact]
    public void TrainingOnPackedWeightsMatchesPlainWeightsAndUnpacksAfter()
    {
        if (!PackedGemm.Available) { Console.WriteLine("skipped: this libtorch exports no MKL pack API"); return; }
        string dir = TestPaths.TempDir();
        var plain = Train(dir, pack: false);
        var packed = Train(dir, pack: true);
        Assert.Equal((0L, 0L), (plain.Forwards, plain.Backwards));
        // Every frozen Linear's forward and (above the first adapter) backward went through the packed weights.
        Assert.True(packed.Forwards > 0 && packed.Backwards > 0, $"packed calls: {packed.Forwards} forward, {packed.Backwards} backward");
        Assert.False(packed.PackedAfter);   // the copies are gone once the steps are
        // MKL's packed kernels sum in another order than its plain sgemm: the same training to float rounding.
        Assert.Equal(plain.Loss, packed.Loss, 4);
        foreach (var (k, v) in plain.Adapter)
        {
            var p = packed.Adapter[k];
            double err = v.Zip(p, (a, b) => Math.Abs(a - b)).Max(), scale = v.Max(Math.Abs);
            Assert.True(err <= 1e-4 * Math.Max(1, scale), $"{k}: max difference {err} (scale {scale})");
        }
    }

    [Fact]
    public void PackedProductEqualsLinearFewerRowsKeepThePlainWeightAndAMergeDropsThePacking()
    {
        if (!PackedGemm.Available) { Console.WriteLine("skipped: this libtorch exports no MKL pack API"); return; }
        var (model, method) = MethodFactory.Create(TestPaths.TinyLlama, new MethodOptions { Method = "lora", Rank = 4, Alpha = 8 }, Tok, CPU, seed: 3);
        using var _ = model;
        // Non-zero B, so that merging changes the base weights.
        using (no_grad())
            foreach (var p in LoraModel.Of(model).Get("default").PeftNamedParameters().Where(p => p.Key.Contains("lora_B")))
                p.Param.normal_(0, 0.1);
        using var ids = tensor(Tok.Encode("abc -> cba").Select(i => (long)i).ToArray()).unsqueeze(0);
        Assert.True(ids.shape[1] >= 4);   // the forwards below go through the packs
        model.eval();
        using var reference = model.Forward(ids);
        using (var packing = FrozenWeightPacking.Apply(model, requested: true, rows: 4))
        {
            Assert.StartsWith("frozen weights packed", packing.Description);
            Assert.All(model.Linears(), l => Assert.True(l.IsPacked, l.ModulePath));
            // Packed for 4 rows: 7 and a [2, 5, in] batch go through the packs, 1 row (decoding) through the plain weight.
            var q = model.Linears().First();
            foreach (var shape in new long[][] { [7, q.InFeatures], [2, 5, q.InFeatures], [1, q.InFeatures] })
            {
                using var x = randn(shape);
                var before = PackedLinear.Calls.Forward;
                using var y = q.BaseForward(x);
                Assert.Equal(shape[0] * (shape.Length == 3 ? shape[1] : 1) >= 4 ? before + 1 : before, PackedLinear.Calls.Forward);
                using var expected = nn.functional.linear(x, q.weight!);
                Assert.True(TestPaths.MaxAbsError(expected, y) < 1e-5, $"[{string.Join(", ", shape)}]: {TestPaths.MaxAbsError(expected, y)}");
            }
            var calls = PackedLinear.Calls.Forward;
            using var logits = model.Forward(ids);
            Assert.True(PackedLinear.Calls.Forward > calls);
            Assert.True(TestPaths.MaxAbsError(reference, logits) < 1e-4, $"packed forward: {TestPaths.MaxAbsError(reference, logits)}");

            // A merge writes the adapter into the weights in place: the packed copies would be stale, so it drops them.
            LoraModel.Of(model).Merge("default");
            Assert.Contains(model.Linears(), l => !l.IsPacked);
            using var merged = model.Forward(ids);
            Assert.True(TestPaths.MaxAbsError(reference, merged) < 1e-4, $"merged forward: {TestPaths.MaxAbsError(reference, merged)}");
        }
        Assert.All(model.Linears(), l => Assert.False(l.IsPacked, l.ModulePath));
    }
}
