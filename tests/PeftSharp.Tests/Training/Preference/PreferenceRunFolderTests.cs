using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using PeftSharp.Training.Preference;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training.Preference;

/// <summary>
/// Issue 16 items 9-10 for DPO/ORPO runs, which share <see cref="RunFolder"/> with SFT: trainer_state.json validated on
/// resume, NaN checkpoints refused and never "last good", leftovers of interrupted saves removed.
/// </summary>
[Collection(PeftSharp.Tests.Training.SerialCollection.Name)]
public class PreferenceRunFolderTests
{
    static TrainerOptions Options(string outDir) => new()
    {
        LearningRate = 5e-3, MaxSteps = 4, BatchSize = 3, MaxSeqLength = 32, OutDir = outDir, SaveInterval = 2, Seed = 5,
    };

    static PreferenceTrainResult Run(TrainerOptions o, string data)
    {
        using var tok = TextTokenizer.FromFolder(TestPaths.TinyLlama);
        var pairs = PreferenceData.Load(data, tok, o.MaxSeqLength);
        var (model, method, reference) = PreferenceSetup.Create(TestPaths.TinyLlama, new MethodOptions { Method = "lora", Rank = 2 }, null, tok, CPU, seed: 1);
        using var _ = model;
        return new PreferenceTrainer(model, method, o, new PreferenceObjective(new PreferenceOptions(), reference), tok.EosId).Train(pairs);
    }

    /// <summary>A DPO run stopped after its step-2 checkpoint: (options to resume it, data file, checkpoint folder).</summary>
    static (TrainerOptions Options, string Data, string Checkpoint) Interrupted()
    {
        string dir = TestPaths.TempDir(), data = PreferencePairs.Write(dir);
        var o = Options(Path.Combine(dir, "run"));
        Assert.Null(Run(o with { StopAfterSteps = 2 }, data).FinalDir);
        return (o with { ResumeFrom = o.OutDir }, data, Checkpoint.Folder(o.OutDir, 2));
    }

    [Theory]
    [InlineData("step", -10, "step -10 is outside this run's 0..4")]
    [InlineData("data_index", 99999, "data position (epoch 0, index 99999) is outside the data (7 sequences)")]
    [InlineData("data_index", 3, "data position (epoch 0, index 3) does not match step 2 (expected epoch 0, index 6)")]
    public void EditedTrainerStateIsRefusedNamingTheFile(string field, int value, string expected)
    {
        var (o, data, ckpt) = Interrupted();
        string state = Path.Combine(ckpt, Checkpoint.State);
        var json = JsonFile.ReadObject(state);
        json[field] = value;
        File.WriteAllText(state, json.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => Run(o, data));
        Assert.Equal($"{state}: {expected}", e.Message.Split("; was")[0]);
        Assert.False(Directory.Exists(Path.Combine(o.OutDir, "final")));
    }

    [Fact]
    public void ACheckpointHoldingNaNIsRefused()
    {
        var (o, data, ckpt) = Interrupted();
        string file = Path.Combine(ckpt, Checkpoint.Params);
        string tensor = IO.NonFiniteTests.Poison(file, float.NaN, new SafeTensorsFile(file).Tensors.Select(t => t.Name).First(n => n.Contains("lora_B")));
        var e = Assert.Throws<InvalidDataException>(() => Run(o, data));
        Assert.Equal($"{file}: tensor '{tensor}' holds NaN or infinite values; resume from an earlier checkpoint", e.Message);
    }

    [Fact]
    public void LeftoversOfInterruptedSavesAreRemovedWhenTheRunResumes()
    {
        var (o, data, _) = Interrupted();
        string guid = Guid.NewGuid().ToString("N");
        string[] leftovers = [Path.Combine(o.OutDir, "checkpoints", $".step-000004.{guid}.tmp"), Path.Combine(o.OutDir, $".final.{guid}.tmp")];
        foreach (var d in leftovers) { Directory.CreateDirectory(d); File.WriteAllText(Path.Combine(d, "adapter_model.safetensors"), "partial"); }
        string metricsTmp = Path.Combine(o.OutDir, $".metrics.jsonl.{guid}.tmp");
        File.WriteAllText(metricsTmp, "partial");
        string kept = Path.Combine(o.OutDir, ".notes.tmp"); // not an AtomicFile name: left alone
        File.WriteAllText(kept, "mine");

        Assert.NotNull(Run(o, data).FinalDir);
        Assert.All(leftovers, d => Assert.False(Directory.Exists(d), d));
        Assert.False(File.Exists(metricsTmp));
        Assert.True(File.Exists(kept));
    }

    [Fact]
    public void ACheckpointHoldingNaNIsNeverNamedTheLastGoodOne()
    {
        // Both loops checkpoint through RunFolder.Save and name RunFolder.LastGood when they diverge. (A learning rate
        // large enough to leave infinite weights after a finite step overflows the optimiser's float scalar first, so the
        // weights are poisoned here the way a diverging update would leave them.)
        using var tok = TextTokenizer.FromFolder(TestPaths.TinyLlama);
        var (model, method, _) = PreferenceSetup.Create(TestPaths.TinyLlama, new MethodOptions { Method = "lora", Rank = 2 }, null, tok, CPU, seed: 1);
        using var __ = model;
        var o = Options(Path.Combine(TestPaths.TempDir(), "run"));
        var parameters = method.TrainableParameters.ToList();
        using var optimizer = Trainer.DefaultOptimizer(parameters, o);
        var run = RunFolder.Open(o, onRecord: null);
        var position = new PeftSharp.Data.DataPosition(0, 3, 5);

        string good = run.Save(method, optimizer, position, 1, 4, o.LearningRate);
        Assert.Equal(good, run.LastGood);
        using (no_grad()) parameters.First(p => p.Name.Contains("lora_B")).P.FillWith(float.NaN);
        string poisoned = run.Save(method, optimizer, position, 2, 4, o.LearningRate);
        Assert.True(Directory.Exists(poisoned));   // written (resume refuses it), but never "last good"
        Assert.Equal(good, run.LastGood);
        Assert.Contains($"Last good checkpoint: {good}.", run.Diverged(double.NaN, 1, 3, "Try a lower learning rate or --beta").Message);
    }
}

[Collection("console")]
public class PreferenceRunFolderCliTests
{
    [Fact]
    public void ResumeThroughTheCliRemovesLeftoversAndRefusesAnEditedStateNamingTheFile()
    {
        string dir = TestPaths.TempDir(), data = PreferencePairs.Write(dir, 8), run = Path.Combine(dir, "dpo");
        var (code, _, err) = CliCapture.Run("train", "--method", "dpo", "--adapter-method", "lora", "--model", TestPaths.TinyLlama, "--data", data,
            "--out", run, "--steps", "3", "--batch", "4", "--max-seq", "32", "--eval-interval", "1000", "--save-interval", "1");
        Assert.True(code == 0, err);

        string guid = Guid.NewGuid().ToString("N");
        string[] leftovers = [Path.Combine(run, "checkpoints", $".step-000004.{guid}.tmp"), Path.Combine(run, $".final.{guid}.tmp")];
        foreach (var d in leftovers) { Directory.CreateDirectory(d); File.WriteAllText(Path.Combine(d, "trainable.safetensors"), "partial"); }
        string metricsTmp = Path.Combine(run, $".metrics.jsonl.{guid}.tmp");
        File.WriteAllText(metricsTmp, "partial");
        string state = Path.Combine(Checkpoint.Folder(run, 3), Checkpoint.State);
        var json = JsonFile.ReadObject(state);
        json["step"] = 1000000;   // once "finished" the run at once, writing final/ from these weights
        File.WriteAllText(state, json.ToJsonString());
        Directory.Delete(Path.Combine(run, "final"), recursive: true);

        (code, _, err) = CliCapture.Run("train", "--method", "dpo", "--resume", run);
        Assert.Equal(1, code);
        Assert.StartsWith($"error: {state}: step 1000000 is outside this run's 0..3", err);
        Assert.DoesNotContain("   at ", err);
        Assert.False(Directory.Exists(Path.Combine(run, "final")));
        Assert.All(leftovers, d => Assert.False(Directory.Exists(d), d));
        Assert.False(File.Exists(metricsTmp));
    }

    [Fact]
    public void ResumingADpoRunKilledDuringItsFirstCheckpointSaysHowToRestart()
    {
        string run = Path.Combine(TestPaths.TempDir(), "run");
        string temp = Path.Combine(run, "checkpoints", $".step-000010.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(temp);
        File.WriteAllText(Path.Combine(temp, "trainable.safetensors"), "partial");
        var (code, _, stderr) = CliCapture.Run("train", "--method", "dpo", "--resume", run, "--model", TestPaths.TinyLlama, "--data", PreferencePairs.Write(TestPaths.TempDir()));
        Assert.Equal(1, code);
        Assert.StartsWith($"error: {run}: no checkpoint to resume from (the run stopped before its first one); start it again, replacing that folder:", stderr);
        Assert.Contains($"--out {run} --overwrite", stderr);
        Assert.False(Directory.Exists(temp));
    }
}
