using System.Diagnostics;

namespace PeftSharp.Tests.Cli;

/// <summary>Issue 16 item 16: qlora-step's memory children accept the parent's flags, started through the apphost (as `dotnet run` does).</summary>
// It prints to the console, so it runs beside the tests that capture it, not during them.
[Collection("console")]
public class BenchSmokeTests
{
    [Fact]
    public void QloraStepRunsItsMemoryChildrenWithTheGivenShape()
    {
        // tests/PeftSharp.Tests/bin/CONFIG/net10.0 -> bench/PeftSharp.Bench/bin/CONFIG/net10.0 (the solution build makes both).
        var testBin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/'));
        string config = testBin.Parent!.Name, repo = testBin.Parent.Parent!.Parent!.Parent!.Parent!.FullName;
        string apphost = Path.Combine(repo, "bench", "PeftSharp.Bench", "bin", config, testBin.Name, "PeftSharp.Bench");
        if (!File.Exists(apphost)) { Console.WriteLine($"skipped: {apphost} not built (build the solution)"); return; }

        var psi = new ProcessStartInfo(apphost) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in "qlora-step --hidden 64 --layers 1 --vocab 256 --heads 4 --kv-heads 4 --batch 1 --seq 8 --rounds 1 --warmup 0 --threads 1".Split(' '))
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}: {stderr.Result}");
        Assert.Contains("1 layers, h 64, vocab 256", stdout);
        Assert.Equal(2, stdout.Split('\n').Count(l => l.Contains("QLoRA/LoRA peak memory ratio")));
    }
}
