using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using PeftSharp.Training.Optim;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>Every tuning method through MethodFactory + Trainer on the tiny fixture model and a reversal task.</summary>
[Collection(SerialCollection.Name)]
public class MethodsEndToEndTests
{
    static readonly TextTokenizer Tok = TextTokenizer.Load(TestPaths.TinyLlama);

    static TrainerOptions Options(string outDir, string method) => new()
    {
        OutDir = outDir, LearningRate = method == "full" ? 3e-3 : method == "prompt" ? 1e-1 : 1e-2, Schedule = LrScheduleKind.Constant,
        WarmupSteps = 0, BatchSize = 8, MaxSeqLength = 32, Seed = 5, MaxGradNorm = 1.0,
    };

    static MethodOptions Method(string m) => new() { Method = m, Rank = 4, Alpha = 8, ReductionFactor = 4, VirtualTokens = 4 };

    static (CausalLM Model, ITrainingMethod Method) Create(string m) => MethodFactory.Create(TestPaths.TinyLlama, Method(m), Tok, CPU, seed: 3);

    static TrainResult Train(CausalLM model, ITrainingMethod method, TrainerOptions o, string data,
        Func<IReadOnlyList<(string Name, Parameter Param)>, TrainerOptions, IOptimizer>? optimizer = null, Action<int>? onStep = null) =>
        new Trainer(model, method, o, Tok.EosId, optimizer) { OnStep = onStep }.Train(TrainingData.Load(data, Tok, o.MaxSeqLength, o.Packing));

    [Theory]
    [InlineData("full")]
    [InlineData("lora")]
    [InlineData("dora")]
    [InlineData("qlora")]
    [InlineData("qdora")]
    [InlineData("adapter")]
    [InlineData("prompt")]
    public void EveryMethodLowersTheLoss(string m)
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 32);
        var (model, method) = Create(m);
        using var _ = model;
        var o = Options(Path.Combine(dir, "out"), m) with { MaxSteps = 20 };
        var r = Train(model, method, o, data);
        var losses = RunRecords.Losses(o.OutDir);
        Assert.Equal(20, losses.Length);
        Assert.True(losses[^4..].Average() < 0.9 * losses[..4].Average(), $"{m}: loss {losses[..4].Average():F3} -> {losses[^4..].Average():F3}");
        Assert.NotNull(r.FinalDir);
    }

    [Fact]
    public void LoraTrainingLeavesEveryBaseWeightBitIdentical()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 16);
        var (model, method) = Create("lora");
        using var _ = model;
        var trained = method.TrainableParameters.Select(p => p.P.Handle).ToHashSet();
        var before = model.named_parameters().Where(p => !trained.Contains(p.parameter.Handle))
            .ToDictionary(p => p.name, p => p.parameter.detach().cpu().bytes.ToArray());
        Assert.True(before.Count >= 2 * 7 + 3, $"only {before.Count} base parameters");
        Train(model, method, Options(Path.Combine(dir, "out"), "lora") with { MaxSteps = 5 }, data);
        var after = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, bytes) in before) Assert.True(bytes.AsSpan().SequenceEqual(after[name].detach().cpu().bytes), name);
        Assert.Contains(method.TrainableParameters, p => p.Name.Contains("lora_B") && p.P.abs().max().item<float>() > 0); // B moved from its zero init
    }

    [Fact]
    public void QloraTrainingLeavesPackedCodesAndScalesBitIdentical()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 16);
        var (model, method) = Create("qlora");
        using var _ = model;
        static byte[] Bytes(Tensor t) => t.detach().cpu().bytes.ToArray();
        var quantized = model.Linears().Where(l => l.Quantized is not null).ToList();
        Assert.NotEmpty(quantized);
        var before = quantized.ToDictionary(l => l.ModulePath, l =>
        {
            var q = (Nf4Weight)l.Quantized!;
            return (Bytes(q.Packed), Bytes(q.Absmax), q.NestedAbsmax is null ? [] : Bytes(q.NestedAbsmax));
        });
        var trained = method.TrainableParameters.Select(p => p.P.Handle).ToHashSet();
        var denseBefore = model.named_parameters().Where(p => !trained.Contains(p.parameter.Handle)).ToDictionary(p => p.name, p => Bytes(p.parameter));
        Train(model, method, Options(Path.Combine(dir, "out"), "qlora") with { MaxSteps = 5 }, data);
        foreach (var l in quantized)
        {
            var q = (Nf4Weight)l.Quantized!;
            var (packed, absmax, nested) = before[l.ModulePath];
            Assert.Equal(packed, Bytes(q.Packed));
            Assert.Equal(absmax, Bytes(q.Absmax));
            Assert.Equal(nested, q.NestedAbsmax is null ? [] : Bytes(q.NestedAbsmax));
        }
        var after = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, bytes) in denseBefore) Assert.Equal(bytes, Bytes(after[name]));
    }

    /// <summary>Also in bf16 compute, whose LoRA matmuls run on bf16 copies of the fp32 adapter while training.</summary>
    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void ResumedLoraRunSavesTheSameAdapterBytes(ScalarType compute)
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 24);
        var o = Options(Path.Combine(dir, "a"), "lora") with { MaxSteps = 6, SaveInterval = 3, ComputeDtype = compute };
        TrainResult Run(TrainerOptions opts)
        {
            var (model, method) = MethodFactory.Create(TestPaths.TinyLlama, Method("lora") with { Dropout = 0.1 }, Tok, CPU, compute, seed: 3);
            using var _ = model;
            return Train(model, method, opts, data);
        }
        var straight = Run(o);
        var interrupted = o with { OutDir = Path.Combine(dir, "b"), StopAfterSteps = 4 };
        Assert.Null(Run(interrupted).FinalDir);
        var resumed = Run(interrupted with { StopAfterSteps = null, ResumeFrom = interrupted.OutDir });
        Assert.Equal(6, resumed.Steps);
        Assert.Equal(File.ReadAllBytes(Path.Combine(straight.FinalDir!, "adapter_model.safetensors")),
                     File.ReadAllBytes(Path.Combine(resumed.FinalDir!, "adapter_model.safetensors")));
        Assert.Equal(RunRecords.Losses(o.OutDir), RunRecords.Losses(interrupted.OutDir));
    }

    /// <summary>Writes part of the optimiser file of one checkpoint, then dies: a process killed in the middle of a save.</summary>
    sealed class DiesMidSave(IOptimizer inner, Func<bool> armed) : IOptimizer
    {
        public void Step() => inner.Step();
        public void ZeroGrad() => inner.ZeroGrad();
        public double LearningRate { get => inner.LearningRate; set => inner.LearningRate = value; }
        public long StateBytes => inner.StateBytes;
        public void LoadState(string path) => inner.LoadState(path);
        public void Dispose() => inner.Dispose();
        public void SaveState(string path)
        {
            if (!armed()) { inner.SaveState(path); return; }
            File.WriteAllBytes(path, new byte[100]);
            throw new IOException("killed mid-save");
        }
    }

    [Fact]
    public void DyingMidSaveLeavesThePreviousCheckpointLoadable()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 16);
        var o = Options(Path.Combine(dir, "out"), "lora") with { MaxSteps = 6, SaveInterval = 2 };
        int step = 0;
        {
            var (model, method) = Create("lora");
            using var _ = model;
            var e = Assert.Throws<IOException>(() => Train(model, method, o, data,
                (ps, opts) => new DiesMidSave(Trainer.DefaultOptimizer(ps, opts), () => step == 4), s => step = s));
            Assert.Equal("killed mid-save", e.Message);
        }
        Assert.False(Directory.Exists(Checkpoint.Folder(o.OutDir, 4)));
        Assert.Equal(Path.GetFullPath(Checkpoint.Folder(o.OutDir, 2)), Path.GetFullPath(Checkpoint.Resolve(o.OutDir)));
        var (fresh, freshMethod) = Create("lora");
        using var __ = fresh;
        using var optimizer = Trainer.DefaultOptimizer(freshMethod.TrainableParameters.ToList(), o);
        var state = Checkpoint.Load(Checkpoint.Resolve(o.OutDir), freshMethod, optimizer);
        Assert.Equal(2, state.Step);
        // ...and the run continues from it to the end.
        var resumed = Train(fresh, freshMethod, o with { ResumeFrom = o.OutDir }, data);
        Assert.Equal(6, resumed.Steps);
        Assert.NotNull(resumed.FinalDir);
    }

    [Fact]
    public void FiftyLoraStepsKeepLiveNativeTensorsFlat()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 32);
        var (model, method) = Create("lora");
        using var _ = model;
        long at10 = 0, at50 = 0, stats10 = 0, stats50 = 0;
        // Tensors dropped without Dispose are freed by finalizers at GC's leisure; collect first so only live ones count.
        static long Live()
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            return Tensor.TotalCount;
        }
        Train(model, method, Options(Path.Combine(dir, "out"), "lora") with { MaxSteps = 50, SaveInterval = 20 }, data, onStep: s =>
        {
            if (s == 10) { at10 = Live(); stats10 = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount; }
            if (s == 50) { at50 = Live(); stats50 = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount; }
        });
        Assert.True(at10 > 0);
        Assert.Equal(at10, at50);
        Assert.Equal(stats10, stats50);
    }
}
