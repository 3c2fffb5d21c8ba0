using PeftSharp.Cli;
using PeftSharp.IO;

namespace PeftSharp.Tests.Cli;

[Collection("console")]
public class CliCommandTests
{
    [Fact]
    public void LogitsCommandReproducesGolden()
    {
        string output = Path.Combine(TestPaths.TempDir(), "out.safetensors");
        string golden = Path.Combine(TestPaths.TinyLlama, "golden.safetensors");
        Assert.Equal(0, CliApp.Run(["logits", "--model", TestPaths.TinyLlama, "--input", golden, "--output", output]));
        using var mine = new SafeTensorsFile(output);
        using var gold = new SafeTensorsFile(golden);
        using var a = mine.Load("logits");
        using var b = gold.Load("logits");
        Assert.Equal("F32", mine.Info("logits").Dtype);
        Assert.True(TestPaths.RelativeError(a, b) <= 1e-5);
    }

    [Theory]
    [InlineData("logits", "--model", "/nonexistent", "--input", "x", "--output", "y")]
    [InlineData("generate", "--model", "/nonexistent", "--prompt", "hi")]
    [InlineData("inspect", "--model", "/nonexistent")]
    [InlineData("generate", "--prompt", "hi")]
    public void BadArgumentsExitNonZero(params string[] args) => Assert.NotEqual(0, CliApp.Run(args));

    [Fact]
    public void LogitsRejectsOutOfRangeIds()
    {
        var dir = TestPaths.TempDir();
        string input = Path.Combine(dir, "in.safetensors");
        using var ids = TorchSharp.torch.tensor(new long[] { 1, 2, 999 }).unsqueeze(0);
        SafeTensorsWriter.Write(input, [("input_ids", ids)]);
        Assert.Equal(1, CliApp.Run(["logits", "--model", TestPaths.TinyLlama, "--input", input, "--output", Path.Combine(dir, "o.safetensors")]));
        Assert.False(File.Exists(Path.Combine(dir, "o.safetensors")));
    }
}
