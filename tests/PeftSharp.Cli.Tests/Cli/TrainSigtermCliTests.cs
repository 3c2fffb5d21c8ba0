using PeftSharp.Training;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// SIGTERM (kill, timeout, systemd, docker stop) stops `peft train` as Ctrl-C does: a checkpoint of the step reached,
/// exit 130, and `--resume` continues it. It used to end the process at once (exit 143) and, with the default
/// --save-interval 0, lose every step.
/// </summary>
[Collection("console")]
public class TrainSigtermCliTests
{
    [Fact]
    public async Task SigtermSavesAResumableCheckpoint()
    {
        if (OperatingSystem.IsWindows()) return;
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8), run = Path.Combine(dir, "run");
        string metrics = Path.Combine(run, MetricsLog.FileName);
        using var p = PeftProcess.Start(["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", run, "--method", "lora",
            "--steps", "1000", "--batch", "4", "--max-seq", "32"]);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        try
        {
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (!(File.Exists(metrics) && File.ReadAllText(metrics).Contains("\"loss\"")) && !p.HasExited && DateTime.UtcNow < deadline) await Task.Delay(50);
            Assert.False(p.HasExited, $"peft train ended early: {(p.HasExited ? await stderr : "")}");
            using (var kill = System.Diagnostics.Process.Start("kill", ["-TERM", p.Id.ToString()])) await kill.WaitForExitAsync();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        }
        finally { if (!p.HasExited) p.Kill(entireProcessTree: true); }
        Assert.True(p.ExitCode == 130, $"exit {p.ExitCode}: {await stdout}{await stderr}");
        var checkpoints = Directory.GetDirectories(Path.Combine(run, "checkpoints"));
        Assert.Single(checkpoints);
        Assert.Contains("interrupted at step", await stdout);   // the trainer's own stop, as after Ctrl-C
        int saved = int.Parse(Path.GetFileName(checkpoints[0])["step-".Length..]);
        Assert.InRange(saved, 1, 999);   // stopped mid-run, not at the end

        var (code, resumed, err) = PeftProcess.Run(["train", "--resume", run]);
        Assert.True(code == 0, resumed + err);
        Assert.Contains($"resumed from", resumed);
        Assert.True(File.Exists(Path.Combine(run, "final", "adapter_model.safetensors")));
    }
}
