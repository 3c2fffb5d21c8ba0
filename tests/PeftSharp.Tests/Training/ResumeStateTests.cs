using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>Issue 16 items 9 and 10: trainer_state.json validated on resume, NaN checkpoints, leftovers of interrupted saves.</summary>
[Collection(SerialCollection.Name)]
public class ResumeStateTests
{
    static readonly TextTokenizer Tok = TextTokenizer.Load(TestPaths.TinyLlama);

    static TrainerOptions Options(string outDir) => new()
    {
        OutDir = outDir, LearningRate = 1e-2, Schedule = LrScheduleKind.Constant, WarmupSteps = 0, BatchSize = 4,
        MaxSeqLength = 32, Seed = 9, MaxSteps = 4, SaveInterval = 2,
    };

    static TrainResult Run(TrainerOptions o, string data)
    {
        var (model, method) = MethodFactory.Create(TestPaths.TinyLlama, new MethodOptions { Method = "lora", Rank = 2, Alpha = 4 }, Tok, CPU, seed: 1);
        using var _ = model;
        return new Trainer(model, method, o, Tok.EosId).Train(TrainingData.Load(data, Tok, o.MaxSeqLength, o.Packing));
    }

    /// <summary>A run stopped after its step-2 checkpoint: (options, data file, checkpoint folder).</summary>
    static (TrainerOptions Options, string Data, string Checkpoint) Interrupted()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 10);
        var o = Options(Path.Combine(dir, "run"));
        Assert.Null(Run(o with { StopAfterSteps = 2 }, data).FinalDir);
        return (o with { ResumeFrom = o.OutDir }, data, Checkpoint.Folder(o.OutDir, 2));
    }

    [Theory]
    [InlineData("step", 1000000, "step 1000000 is outside this run's 0..4")]
    [InlineData("step", -10, "step -10 is outside this run's 0..4")]
    [InlineData("data_index", 99999, "data position (epoch 0, index 99999) is outside the data (10 sequences)")]
    [InlineData("data_epoch", -1, "data position (epoch -1, index 8) is outside the data (10 sequences)")]
    [InlineData("data_index", 4, "data position (epoch 0, index 4) does not match step 2 (expected epoch 0, index 8)")]
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
        string[] leftovers =
        [
            Path.Combine(o.OutDir, "checkpoints", $".step-000004.{guid}.tmp"),
            Path.Combine(o.OutDir, $".final.{guid}.tmp"),
        ];
        foreach (var d in leftovers) { Directory.CreateDirectory(d); File.WriteAllText(Path.Combine(d, "model.safetensors"), "partial"); }
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
    public void AFolderSetAsideByAnInterruptedSwapIsPutBack()
    {
        string dir = TestPaths.TempDir(), guid = Guid.NewGuid().ToString("N");
        string old = Path.Combine(dir, $".step-000002.{guid}.tmp.old"), tmp = Path.Combine(dir, $".step-000002.{guid}.tmp");
        Directory.CreateDirectory(old); File.WriteAllText(Path.Combine(old, "a"), "complete");
        Directory.CreateDirectory(tmp);
        AtomicFile.RemoveLeftovers(dir);
        Assert.Equal(["step-000002"], Directory.GetFileSystemEntries(dir).Select(Path.GetFileName));
        Assert.Equal("complete", File.ReadAllText(Path.Combine(dir, "step-000002", "a")));
    }
}

[Collection("console")]
public class ResumeWithoutCheckpointTests
{
    [Fact]
    public void ResumingARunKilledDuringItsFirstCheckpointSaysHowToRestart()
    {
        string run = Path.Combine(TestPaths.TempDir(), "run");
        string temp = Path.Combine(run, "checkpoints", $".step-000010.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(temp);
        File.WriteAllText(Path.Combine(temp, "trainable.safetensors"), "partial");
        var (code, _, stderr) = CliCapture.Run("train", "--resume", run, "--model", TestPaths.TinyLlama, "--data", ReversalTask.Write(TestPaths.TempDir(), 4));
        Assert.Equal(1, code);
        Assert.StartsWith($"error: {run}: no checkpoint to resume from (the run stopped before its first one); start it again, replacing that folder:", stderr);
        Assert.Contains($"--out {run} --overwrite", stderr);
        Assert.False(Directory.Exists(temp));
    }
}
