using PeftSharp.Tests.Training;
using PeftSharp.Training;
using PeftSharp.Training.Methods;

namespace PeftSharp.Tests.Contracts;

/// <summary>
/// lora_dropout at the trainer level, through FineTune.Run, the library call `peft train` makes (nothing set by hand): with the same seed,
/// data and init, a run with dropout 0.5 logs different losses from a run without once the adapter is non-zero
/// (step 1 itself runs with B = 0, where dropout cannot show), and two runs without dropout log the same losses.
/// </summary>
[Collection(SerialCollection.Name)]
public class LoraDropoutTrainerTests
{
    static double[] Losses(string dir, string name, double dropout)
    {
        var result = FineTune.Run(new FineTuneOptions
        {
            Model = TestPaths.TinyLlama,
            DataFile = ReversalTask.Write(dir, 8),
            Method = new MethodOptions { Method = "lora", Rank = 4, Alpha = 8, Dropout = dropout },
            Trainer = new TrainerOptions
            {
                OutDir = Path.Combine(dir, name), LearningRate = 1e-2, Schedule = LrScheduleKind.Constant, WarmupSteps = 0,
                BatchSize = 4, MaxSeqLength = 32, Seed = 5, MaxSteps = 3,
            },
            Seed = 3,
        });
        Assert.NotNull(result.Train.FinalDir);
        return RunRecords.Losses(Path.Combine(dir, name));
    }

    [Fact]
    public void DropoutChangesTheLossesAfterStepOneAndNoDropoutRepeats()
    {
        string dir = TestPaths.TempDir();
        var plain = Losses(dir, "plain", 0.0);
        var again = Losses(dir, "again", 0.0);
        var dropped = Losses(dir, "dropped", 0.5);
        Assert.Equal(3, plain.Length);
        Assert.Equal(plain, again);
        Assert.Equal(plain[0], dropped[0]);
        Assert.NotEqual(plain[1], dropped[1]);
    }
}
