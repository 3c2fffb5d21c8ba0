using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>Full fine-tuning of the tiny fixture model on a reversal task written in its byte-level vocabulary.</summary>
[Collection(SerialCollection.Name)]
public class TrainerTests
{
    static readonly TextTokenizer Tok = TextTokenizer.Load(TestPaths.TinyLlama);

    static TrainResult Run(TrainerOptions o, string trainPath, string? evalPath = null, Action<int>? onStep = null, Action<CausalLM>? prepare = null)
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        prepare?.Invoke(model);
        var data = TrainingData.Load(trainPath, Tok, o.MaxSeqLength, o.Packing, evalPath);
        var method = new FullFineTuning(model, Tok.Path);
        return new Trainer(model, method, o, Tok.EosId) { OnStep = onStep }.Train(data);
    }

    static TrainerOptions Options(string outDir) => new()
    {
        OutDir = outDir, LearningRate = 3e-3, Schedule = LrScheduleKind.Cosine, WarmupSteps = 2, BatchSize = 4,
        MaxSeqLength = 32, Seed = 17, MaxGradNorm = 1.0,
    };

    [Fact]
    public void ResumedRunEndsBitIdenticalToUninterruptedRun()
    {
        string dir = TestPaths.TempDir(), train = ReversalTask.Write(dir, 24);
        string eval = ReversalTask.Write(dir, 4, offset: 50);
        var o = Options(Path.Combine(dir, "a")) with { MaxSteps = 6, SaveInterval = 3 };
        var whole = Run(o, train, eval);
        var interrupted = o with { OutDir = Path.Combine(dir, "b"), StopAfterSteps = 4 }; // dies one step after the checkpoint
        Assert.Null(Run(interrupted, train, eval).FinalDir);
        var resumed = Run(interrupted with { StopAfterSteps = null, ResumeFrom = Path.Combine(dir, "b") }, train, eval);

        // The "before" evaluation ran in the first process; the resumed one reports it from metrics.jsonl.
        Assert.NotNull(whole.FirstEval);
        Assert.Equal(MetricsLog.Round(whole.FirstEval!.Loss), resumed.FirstEval!.Loss);
        Assert.Equal(whole.FirstEval.ExactMatch, resumed.FirstEval.ExactMatch);
        Assert.Equal(whole.FirstEval.Examples, resumed.FirstEval.Examples);
        Assert.Equal(whole.LastEval! with { Samples = null }, resumed.LastEval! with { Samples = null });
        Assert.Equal(whole.LastEval.Samples!.Select(x => x.Got), resumed.LastEval.Samples!.Select(x => x.Got));   // same greedy answers

        Assert.Equal(6, resumed.Steps);
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "a", "final", "model.safetensors")),
                     File.ReadAllBytes(Path.Combine(resumed.FinalDir!, "model.safetensors")));
        Assert.Equal(RunRecords.Losses(Path.Combine(dir, "a")), RunRecords.Losses(Path.Combine(dir, "b"))); // step 4 of the dead run was dropped
    }

    /// <summary>
    /// The kernels' autograd functions (the loss's among them) hold the gradients they return until the next custom
    /// backward; the trainer releases them after each backward, so the loss's [N, V] gradient does not live through the
    /// optimizer step and the next forward.
    /// </summary>
    [Fact]
    public void KernelGradientsAreReleasedAfterEachBackward()
    {
        string dir = TestPaths.TempDir(), train = ReversalTask.Write(dir, 8);
        var held = new List<int>();
        Run(Options(Path.Combine(dir, "run")) with { MaxSteps = 2 }, train, onStep: _ => held.Add(PeftSharp.Kernels.ReturnedGradients.Held));
        Assert.Equal([0, 0], held);
    }

    [Fact]
    public void GradientAccumulationMatchesOneLargerBatch()
    {
        string dir = TestPaths.TempDir(), train = ReversalTask.Write(dir, 8);
        var big = Options(Path.Combine(dir, "big")) with { MaxSteps = 1, BatchSize = 4, MaxGradNorm = 0, WarmupSteps = 0, Schedule = LrScheduleKind.Constant };
        var small = big with { OutDir = Path.Combine(dir, "small"), BatchSize = 2, GradientAccumulation = 2 };
        Run(big, train);
        Run(small, train);
        Assert.Equal(RunRecords.Losses(big.OutDir)[0], RunRecords.Losses(small.OutDir)[0], 5);
        using var a = ModelLoader.Load(Path.Combine(big.OutDir, "final"));
        using var b = ModelLoader.Load(Path.Combine(small.OutDir, "final"));
        using var before = ModelLoader.Load(TestPaths.TinyLlama);
        var pa = a.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var pb = b.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p0) in before.named_parameters())
        {
            using var da = pa[name] - p0;
            using var db = pb[name] - p0;
            Assert.True(TestPaths.MaxAbsError(da, db) < 1e-4 * 3e-3 + 1e-7 || TestPaths.RelativeError(da, db) < 1e-3, name);
        }
    }

    [Fact]
    public void OutputFolderWithARunIsRefusedUnlessOverwrite()
    {
        string dir = TestPaths.TempDir(), train = ReversalTask.Write(dir, 4);
        var o = Options(Path.Combine(dir, "out")) with { MaxSteps = 1 };
        Run(o, train);
        var e = Assert.Throws<InvalidOperationException>(() => Run(o, train));
        Assert.Contains("already holds a training run", e.Message);
        Assert.Equal(1, Run(o with { Overwrite = true }, train).Steps);
        Assert.Single(RunRecords.Losses(o.OutDir));
    }

    [Fact]
    public void NonFiniteLossStopsAndKeepsLastGoodCheckpoint()
    {
        string dir = TestPaths.TempDir(), train = ReversalTask.Write(dir, 8);
        var o = Options(Path.Combine(dir, "out")) with { MaxSteps = 6, SaveInterval = 2 };
        CausalLM? live = null;
        void Poison(int step)
        {
            if (step == 3) using (no_grad()) live!.model.norm.weight.FillWith(float.NaN);
        }
        var e = Assert.Throws<TrainingDivergedException>(() => Run(o, train, onStep: Poison, prepare: m => live = m));
        Assert.Contains("at step 4", e.Message);
        Assert.Contains("step-000002", e.Message);
        Assert.True(File.Exists(Path.Combine(Checkpoint.Folder(o.OutDir, 2), Checkpoint.State)));
        Assert.False(Directory.Exists(Path.Combine(o.OutDir, "final")));
    }

    [Fact]
    public void FiftyStepsKeepLiveTensorsFlatLearnAndLogMetrics()
    {
        string dir = TestPaths.TempDir(), train = ReversalTask.Write(dir, 32), eval = ReversalTask.Write(dir, 6, offset: 100);
        var o = Options(Path.Combine(dir, "out")) with { MaxSteps = 60, EvalInterval = 20, SaveInterval = 25 };
        long at10 = 0, at60 = 0;
        var r = Run(o, train, eval, onStep: s =>
        {
            if (s == 10)
            {
                // Finalise garbage left by earlier tests first: its release would otherwise lower the count mid-run.
                GC.Collect();
                GC.WaitForPendingFinalizers();
                at10 = Tensor.TotalCount;
            }
            if (s == 60) at60 = Tensor.TotalCount;
        });
        Assert.True(at60 <= at10, $"live tensors grew from {at10} at step 10 to {at60} at step 60");

        var losses = RunRecords.Losses(o.OutDir);
        Assert.Equal(60, losses.Length);
        Assert.True(losses[^5..].Average() < 0.7 * losses[..5].Average(), $"loss {losses[..5].Average()} -> {losses[^5..].Average()}");
        var records = File.ReadLines(Path.Combine(o.OutDir, MetricsLog.FileName)).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        foreach (var k in new[] { "step", "loss", "lr", "tokens_per_s", "elapsed_s", "peak_rss_mb", "rss_mb", "grad_norm" })
            Assert.True(records.First(x => x["loss"] is not null).ContainsKey(k), k);
        Assert.Equal([0, 20, 40, 60], records.Where(x => x["eval_loss"] is not null).Select(x => x["step"]!.GetValue<int>()));
        Assert.True(records.Where(x => x["eval_accuracy"] is not null).All(x => x["eval_accuracy"]!.GetValue<double>() is >= 0 and <= 1));
        Assert.True(r.LastEval!.Loss < r.FirstEval!.Loss);
        Assert.True(records.First(x => x["loss"] is not null)["peak_rss_mb"]!.GetValue<double>() > 10);
        using var reloaded = ModelLoader.Load(r.FinalDir!); // the full-FT artefact is a loadable HF folder
        Assert.True(File.Exists(Path.Combine(r.FinalDir!, "tokenizer.json")));
    }
}
