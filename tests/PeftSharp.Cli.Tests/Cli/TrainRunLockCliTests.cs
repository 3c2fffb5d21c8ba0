using PeftSharp.IO;
using PeftSharp.Training;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// Two `peft train` processes into one --out: the second is refused before it writes anything. Started together, both
/// used to pass the "already holds a run" check and interleave their steps in one metrics.jsonl, each overwriting the
/// other's train-options.json, run-plan.json, checkpoints and final adapter.
/// </summary>
[Collection("console")]
public class TrainRunLockCliTests
{
    static string[] Train(string data, string run, string seed, params string[] extra) =>
        ["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", run, "--method", "lora", "--batch", "4", "--max-seq", "32", "--seed", seed, .. extra];

    [Fact]
    public async Task ASecondTrainIntoARunningRunsFolderIsRefusedAndTheFolderIsLeftToTheFirst()
    {
        if (OperatingSystem.IsWindows()) return;
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8), run = Path.Combine(dir, "run");
        string metrics = Path.Combine(run, MetricsLog.FileName), options = Path.Combine(run, "train-options.json");
        using (var first = PeftProcess.Start(Train(data, run, "1", "--steps", "100000")))
        {
            try
            {
                _ = first.StandardOutput.ReadToEndAsync();
                var err = first.StandardError.ReadToEndAsync();
                var deadline = DateTime.UtcNow.AddMinutes(2);
                while (!(File.Exists(metrics) && File.ReadAllText(metrics).Contains("\"loss\"")) && !first.HasExited && DateTime.UtcNow < deadline) await Task.Delay(50);
                Assert.False(first.HasExited, $"the first peft train ended early: {(first.HasExited ? await err : "")}");
                string optionsBefore = File.ReadAllText(options);

                // Plain, and with --overwrite (which would delete the first run's checkpoints under it): both refused.
                foreach (var extra in new[] { new[] { "--steps", "3" }, ["--steps", "3", "--overwrite"] })
                {
                    var (code, stdout, stderr) = PeftProcess.Run(Train(data, run, "2", extra));
                    Assert.True(code == 1, stdout + stderr);
                    Assert.Equal($"error: {run}: another training process is writing this run folder (it holds {RunLock.FileName}); " +
                                 "wait for it to end, or give another output folder", stderr.Trim());
                    Assert.DoesNotContain("memory plan", stdout);   // refused before loading and planning
                }
                Assert.Equal(optionsBefore, File.ReadAllText(options));   // still the first run's options (seed 1)
                Assert.Equal(1, JsonFile.ReadObject(options)["seed"]!.GetValue<int>());
                Assert.False(first.HasExited);
            }
            finally { first.Kill(entireProcessTree: true); first.WaitForExit(); }
        }
        // The kernel dropped the killed process's lock: the folder can be taken over at once.
        var (again, outText, errText) = PeftProcess.Run(Train(data, run, "3", "--steps", "2", "--overwrite"));
        Assert.True(again == 0, outText + errText);
        Assert.True(File.Exists(Path.Combine(run, "final", "adapter_model.safetensors")));
    }

    [Fact]
    public void ARefusedStartLeavesNoFolderBehind()
    {
        // The lock file is made in --out before anything else; a start that fails after it must not leave the folder.
        string dir = TestPaths.TempDir(), run = Path.Combine(dir, "run"), bad = Path.Combine(dir, "bad.jsonl");
        File.WriteAllText(bad, "{\"nope\": 1}\n");
        var (code, _, err) = CliCapture.Run(Train(bad, run, "1", "--steps", "1"));
        Assert.Equal(1, code);
        Assert.Contains("bad.jsonl", err);
        Assert.False(Directory.Exists(run), string.Join(", ", Directory.Exists(run) ? Directory.GetFileSystemEntries(run) : []));
    }
}
