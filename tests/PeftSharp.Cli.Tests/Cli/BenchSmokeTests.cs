using System.Diagnostics;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// The bench app started through its apphost (as `dotnet run` does): qlora-step's memory children accept the parent's
/// flags (issue 16 item 16); lora-step --profile attributes the step to its ops (issue 17 item 1).
/// </summary>
// It prints to the console, so it runs beside the tests that capture it, not during them.
[Collection("console")]
public class BenchSmokeTests
{
    [Fact]
    public void QloraStepRunsItsMemoryChildrenWithTheGivenShape()
    {
        if (RunBench("qlora-step --hidden 64 --layers 1 --vocab 256 --heads 4 --kv-heads 4 --batch 1 --seq 8 --rounds 1 --warmup 0 --threads 1") is not { } stdout) return;
        Assert.Contains("1 layers, h 64, vocab 256", stdout);
        Assert.Equal(2, stdout.Split('\n').Count(l => l.Contains("QLoRA/LoRA peak memory ratio")));
    }

    [Fact]
    public void LoraStepProfileAttributesTheStepToItsOps()
    {
        if (RunBench("lora-step --profile --hidden 64 --layers 2 --vocab 256 --heads 4 --kv-heads 4 --batch 1 --seq 16 --steps 2 --warmup 1 --threads 1 --matmul 64") is not { } stdout) return;
        foreach (var row in new[] { "base linear (frozen matmul)", "lora adapter", "rmsnorm", "rope", "attention scores (sdpa)", "lm_head", "loss (cross entropy)", "backward", "AdamW" })
            Assert.Contains(row, stdout);
        // Two layers with q_proj,v_proj adapted: 4 LoRA calls per step, 2 RoPE calls per layer.
        Assert.Matches(@"lora adapter\s+[0-9.]+\s+[0-9.]+ ?%\s+4\.0", stdout);
        Assert.Matches(@"rope\s+[0-9.]+\s+[0-9.]+ ?%\s+4\.0", stdout);
        Assert.Contains("managed vs native", stdout);
    }

    /// <summary>Runs the bench apphost with <paramref name="args"/>; its stdout, or null (skipped, said why) when not built.</summary>
    static string? RunBench(string args)
    {
        // tests/PeftSharp.Cli.Tests/bin/CONFIG/net10.0 -> bench/PeftSharp.Bench/bin/CONFIG/net10.0 (the solution build makes both).
        var testBin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/'));
        string config = testBin.Parent!.Name, repo = testBin.Parent.Parent!.Parent!.Parent!.Parent!.FullName;
        string apphost = Path.Combine(repo, "bench", "PeftSharp.Bench", "bin", config, testBin.Name, "PeftSharp.Bench");
        if (!File.Exists(apphost)) { Console.WriteLine($"skipped: {apphost} not built (build the solution)"); return null; }

        var psi = new ProcessStartInfo(apphost) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args.Split(' ')) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}: {stderr.Result}");
        return stdout;
    }
}
