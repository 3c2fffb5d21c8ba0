using PeftSharp.Cli;
using PeftSharp.Cli.Commands;
using PeftSharp.Models;

namespace PeftSharp.Tests.Quantization;

[Collection("console")]   // it runs the CLI, which writes to the process-wide console other tests capture
public class QuantizeCliTests
{
    [Fact]
    public void QuantizeWritesALoadableFolderAndInspectDescribesIt()
    {
        string outDir = Path.Combine(TestPaths.TempDir(), "q");
        Assert.Equal(0, CliApp.Run(["quantize", "--model", TestPaths.TinyLlama, "--out", outDir, "--block-size", "32"]));
        using (var m = ModelLoader.Load(outDir)) Assert.Equal("nf4-b32-dq", m.QuantizationScheme);
        var lines = InspectExtensions.Describe(outDir).ToList();
        Assert.Contains(lines, l => l.Key == "quantisation" && l.Value.StartsWith("nf4-b32-dq: 14 tensors"));
        Assert.Equal(0, CliApp.Run(["inspect", "--model", outDir]));
        Assert.DoesNotContain(Directory.GetDirectories(Path.GetDirectoryName(outDir)!), d => d.EndsWith(".tmp"));
    }

    [Theory]
    [InlineData("--block-size", "48")]
    [InlineData("--block-size", "4096")] // does not divide [64, 176]
    public void BadBlockSizesExitOneAndWriteNothing(string flag, string value)
    {
        string outDir = Path.Combine(TestPaths.TempDir(), "q");
        Assert.Equal(1, CliApp.Run(["quantize", "--model", TestPaths.TinyLlama, "--out", outDir, flag, value]));
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void QuantisingAQuantisedFolderIsRefused()
    {
        string q = QuantizedModelTests.QuantizedTiny();
        Assert.Equal(1, CliApp.Run(["quantize", "--model", q, "--out", Path.Combine(TestPaths.TempDir(), "qq")]));
    }
}
