using PeftSharp.Cli;
using PeftSharp.Models;

namespace PeftSharp.Tests.Training;

[Collection("console")]   // it runs the CLI, which writes to the process-wide console other tests capture
public class MakeDemoCommandTests
{
    [Fact]
    public void WritesDataAndPretrainsALoadableBase()
    {
        string dir = TestPaths.TempDir();
        Assert.Equal(0, CliApp.Run(["make-demo", "--out", dir, "--pretrain", "--steps", "2"]));
        foreach (var f in new[] { "pretrain.txt", "heldout.txt", "train.jsonl", "eval.jsonl", "base/config.json", "base/tokenizer.json" })
            Assert.True(File.Exists(Path.Combine(dir, f)), f);
        using var model = ModelLoader.Load(Path.Combine(dir, "base"));
        Assert.Equal("bfloat16", ModelConfig.Load(Path.Combine(dir, "base")).TorchDtype);
        var steps = File.ReadLines(Path.Combine(dir, "base", "pretrain_metrics.jsonl")).Count(l => l.Contains("\"loss\""));
        Assert.Equal(2, steps);
    }

    [Fact]
    public void ZeroStepsIsRejected() =>
        Assert.Equal(1, CliApp.Run(["make-demo", "--out", TestPaths.TempDir(), "--pretrain", "--steps", "0"]));
}
