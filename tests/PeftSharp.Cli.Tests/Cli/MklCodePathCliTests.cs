namespace PeftSharp.Tests.Cli;

/// <summary>
/// `peft train` in a fresh process (MKL settles its code path once per process, at its first matmul): on an AMD CPU it
/// says it runs MKL's Intel code path, and PEFTSHARP_MKL_INTEL_PATH=0 keeps MKL's generic one and says so.
/// </summary>
public class MklCodePathCliTests
{
    [Fact]
    public void TrainSaysWhichMklCodePathRunsAndTheSwitchCanBeTurnedOff()
    {
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8);
        bool amd = PeftSharp.Memory.CpuRuntime.IsAmdCpu();

        string on = Train(dir, data, "on", null);
        string off = Train(dir, data, "off", "0");
        if (!amd)
        {
            Assert.Contains("cpu matmul MKL's own code path (not an AMD x86 CPU)", on);
            return;
        }
        if (!OperatingSystem.IsLinux()) return;
        Assert.Contains("cpu matmul MKL's Intel code path on this AMD CPU", on);
        Assert.Contains("cpu matmul MKL's generic code path for non-Intel CPUs (PEFTSHARP_MKL_INTEL_PATH=0)", off);
    }

    /// <summary>One 1-step run of the peft apphost beside this test assembly; its stdout.</summary>
    static string Train(string dir, string data, string name, string? env)
    {
        var (code, stdout, err) = PeftProcess.Run(
            ["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", Path.Combine(dir, name), "--steps", "1",
             "--batch", "2", "--max-seq", "32", "--method", "lora", "--targets", "q_proj", "--rank", "2", "--threads", "1"],
            new Dictionary<string, string?> { ["PEFTSHARP_MKL_INTEL_PATH"] = env });
        Assert.True(code == 0, $"exit {code}: {err}");
        // Without ANSI styling, and with the console's line wrapping undone.
        return CliCapture.Plain(stdout);
    }
}
