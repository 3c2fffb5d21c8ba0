using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>lora_dropout through the path users take: MethodFactory + Trainer (train() on, eval() after), no flags set by hand.</summary>
[Collection(SerialCollection.Name)]
public class LoraDropoutTrainingTests
{
    static readonly TextTokenizer Tok = TextTokenizer.Load(TestPaths.TinyLlama);

    static Dictionary<string, float[]> TrainAdapter(string dir, double dropout, out CausalLM model)
    {
        string data = ReversalTask.Write(dir, 8);
        var o = new TrainerOptions
        {
            OutDir = Path.Combine(dir, $"out-{dropout}"), LearningRate = 1e-2, Schedule = LrScheduleKind.Constant, WarmupSteps = 0,
            BatchSize = 4, MaxSeqLength = 32, Seed = 5, MaxSteps = 3,
        };
        (model, var method) = MethodFactory.Create(TestPaths.TinyLlama, new MethodOptions { Method = "lora", Rank = 4, Alpha = 8, Dropout = dropout }, Tok, CPU, seed: 3);
        new Trainer(model, method, o, Tok.EosId).Train(TrainingData.Load(data, Tok, o.MaxSeqLength, o.Packing));
        return LoraModel.Of(model).Get("default").PeftNamedParameters().ToDictionary(p => p.Key, p => p.Param.detach().data<float>().ToArray());
    }

    [Fact]
    public void DropoutChangesTheTrainedAdapterAndEvalIsDeterministic()
    {
        string dir = TestPaths.TempDir();
        var plain = TrainAdapter(dir, 0.0, out var m0);
        m0.Dispose();
        var dropped = TrainAdapter(dir, 0.5, out var model);
        using var _ = model;
        // Same seed, data and initial weights: only dropout being active in training can make the adapters differ.
        Assert.Equal(plain.Keys.Order(), dropped.Keys.Order());
        Assert.Contains(plain.Keys, k => !plain[k].SequenceEqual(dropped[k]));

        // After Train the model is in eval mode: two forwards of the trained adapter give the same logits.
        using var ids = tensor(Tok.Encode("abc ->").Select(i => (long)i).ToArray()).unsqueeze(0);
        using var a = model.Forward(ids);
        using var b = model.Forward(ids);
        Assert.Equal(0.0, TestPaths.MaxAbsError(a, b));
    }
}
