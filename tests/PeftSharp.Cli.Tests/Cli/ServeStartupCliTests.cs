namespace PeftSharp.Tests.Cli;

/// <summary>`peft serve` refusing an --adapter trained on another base at startup: one error line, non-zero exit.</summary>
public class ServeStartupCliTests
{
    [Fact]
    public void AnAdapterForAnotherBaseIsRefusedOnceAtStartup()
    {
        // A real PEFT LoRA for SmolLM-135M (576 wide) beside the 64-wide tiny-llama fixture.
        if (RealFixtures.Folder("smollm135m-medflash-lora") is not { } adapter) return;
        var (code, stdout, stderr) = PeftProcess.Run(["serve", "--model", TestPaths.TinyLlama, "--adapter", $"smol={adapter}", "--port", "0", "--threads", "1"]);
        Assert.NotEqual(0, code);
        string all = stdout + stderr;
        Assert.Contains("error:", all);
        // The refusal names the module's shape once: no warning record repeating the error.
        Assert.DoesNotContain("refused (", all);
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(all, "in_features"));
    }
}
