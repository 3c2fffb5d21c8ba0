using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using PeftSharp.Training.Preference;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training.Preference;

/// <summary>A DPO run stopped half way and resumed from its checkpoint ends exactly where an uninterrupted run does.</summary>
[Collection(PeftSharp.Tests.Training.SerialCollection.Name)]
public class PreferenceResumeTests
{
    static List<JsonObject> Run(string data, string outDir, int? stopAfter = null, bool resume = false)
    {
        using var tok = TextTokenizer.FromFolder(TestPaths.TinyLlama);
        var options = new TrainerOptions
        {
            LearningRate = 5e-3, MaxSteps = 4, BatchSize = 3, MaxSeqLength = 32, OutDir = outDir, SaveInterval = 2,
            StopAfterSteps = stopAfter, ResumeFrom = resume ? outDir : null, Seed = 5,
        };
        var pairs = PreferenceData.Load(data, tok, options.MaxSeqLength);
        var (model, method, reference) = PreferenceSetup.Create(TestPaths.TinyLlama, new MethodOptions { Method = "lora", Rank = 2 }, null, tok, CPU, seed: 1);
        using var _ = model;
        var records = new List<JsonObject>();
        new PreferenceTrainer(model, method, options, new PreferenceObjective(new PreferenceOptions(), reference), tok.EosId) { OnRecord = records.Add }.Train(pairs);
        return records;
    }

    [Fact]
    public void StoppedAndResumedRunMatchesAnUninterruptedOne()
    {
        string dir = TestPaths.TempDir(), data = Path.Combine(dir, "p.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 7).Select(i => $"{{\"prompt\":\"x{i} ->\",\"chosen\":\" {i}\",\"rejected\":\" {i}{i}!\"}}"));
        var whole = Run(data, Path.Combine(dir, "whole"));
        var first = Run(data, Path.Combine(dir, "split"), stopAfter: 2);
        Assert.Equal(2, first.Count);
        var rest = Run(data, Path.Combine(dir, "split"), resume: true);
        Assert.Equal([3, 4], rest.Select(r => r["step"]!.GetValue<int>()));
        Assert.Equal(whole.Select(r => r["loss"]!.GetValue<double>()), first.Concat(rest).Select(r => r["loss"]!.GetValue<double>()));
        Assert.Equal(whole.Select(r => r["rewards/margins"]!.GetValue<double>()), first.Concat(rest).Select(r => r["rewards/margins"]!.GetValue<double>()));
        Assert.True(File.Exists(Path.Combine(dir, "split", "final", "adapter_config.json")));
    }
}
