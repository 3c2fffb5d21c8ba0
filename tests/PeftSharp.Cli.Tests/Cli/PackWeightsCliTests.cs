namespace PeftSharp.Tests.Cli;

/// <summary>
/// `peft train --pack-weights`: a CPU fp32 LoRA run says whether its frozen weights are packed for MKL, and its memory
/// plan carries the packed copies exactly when they are (2 x the frozen weights; Memory/CpuRuntime.PacksWeights).
/// </summary>
public class PackWeightsCliTests
{
    [Fact]
    public void TrainPacksTheFrozenWeightsOnlyWhenAskedAndPlansTheCopies()
    {
        if (!PeftSharp.Memory.CpuRuntime.CanPackWeights) return;   // MKL's pack API: Linux x64 libtorch
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8);
        string on = Train(dir, data, "on"), off = Train(dir, data, "off");
        Assert.Contains("frozen weights packed for MKL:", on);
        // The plan table's row (its cells wrap at the console's 80 columns: the row's first words).
        Assert.Contains("runtime allowance: frozen", on);
        Assert.Contains("--pack-weights on: 2 x the", on);
        Assert.Contains("not packed (--pack-weights off)", off);
        Assert.DoesNotContain("runtime allowance: frozen", off);
        // The option is kept with the run, so a resume packs (or not) as the run started.
        Assert.Contains("\"pack-weights\": \"on\"", File.ReadAllText(Path.Combine(dir, "on", "train-options.json")));
    }

    static string Train(string dir, string data, string mode)
    {
        var (code, stdout, err) = PeftProcess.Run(
            ["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", Path.Combine(dir, mode), "--steps", "1",
             "--batch", "2", "--max-seq", "32", "--method", "lora", "--targets", "q_proj", "--rank", "2", "--threads", "1", "--pack-weights", mode]);
        Assert.True(code == 0, $"exit {code}: {err}");
        return CliCapture.Plain(stdout);
    }
}
