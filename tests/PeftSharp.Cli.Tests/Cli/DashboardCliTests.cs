using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using PeftSharp.Serving.Dashboard;
using PeftSharp.Training;

namespace PeftSharp.Tests.Cli;

/// <summary>`peft dashboard` and `peft train --dashboard` on bad input: one line naming the folder, file line or flag; exit 1.</summary>
[Collection("console")]
public class DashboardCliTests
{
    [Fact]
    public void AFolderWithoutMetricsIsRefused()
    {
        string dir = TestPaths.TempDir();
        var (code, _, err) = CliCapture.Run("dashboard", dir, "--port", "0");
        Assert.Equal(1, code);
        Assert.Equal($"error: {dir}: no metrics.jsonl here or in its subfolders (not a `peft train` run folder nor a `peft compare` folder)", err.Trim());
        (code, _, err) = CliCapture.Run("dashboard", Path.Combine(dir, "missing"), "--port", "0");
        Assert.Equal(1, code);
        Assert.Equal($"error: {Path.Combine(dir, "missing")}: folder not found", err.Trim());
    }

    [Fact]
    public void ACorruptLineIsNamed()
    {
        string run = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(run, MetricsLog.FileName), "{\"step\":1,\"loss\":2.0}\nnot json\n");
        var (code, _, err) = CliCapture.Run("dashboard", run, "--port", "0");
        Assert.Equal(1, code);
        Assert.StartsWith($"error: {Path.Combine(run, MetricsLog.FileName)} line 2: not JSON", err.Trim());
        Assert.DoesNotContain("\n", err.Trim());
    }

    [Fact]
    public void APortInUseIsNamedByDashboardAndByTrainBeforeTraining()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        int port = ((IPEndPoint)taken.LocalEndpoint).Port;
        string run = TestPaths.TempDir();
        new MetricsLog(run).Append(new System.Text.Json.Nodes.JsonObject { ["step"] = 1, ["loss"] = 1.0 });
        var (code, _, err) = CliCapture.Run("dashboard", run, "--port", $"{port}");
        Assert.Equal(1, code);
        Assert.Equal($"error: --port {port}: 127.0.0.1:{port} is in use; pass another port, or 0 for any free one", err.Trim());

        string dir = TestPaths.TempDir(), outDir = Path.Combine(dir, "run");
        (code, _, err) = CliCapture.Run("train", "--model", TestPaths.TinyLlama, "--data", ReversalTask.Write(dir, 4), "--out", outDir,
            "--dashboard", "--dashboard-port", $"{port}");
        Assert.Equal(1, code);
        Assert.Equal($"error: --dashboard-port {port}: 127.0.0.1:{port} is in use; pass another port, or 0 for any free one", err.Trim());
        Assert.False(Directory.Exists(outDir));   // nothing trained, nothing written
    }

    /// <summary>SIGTERM (kill, timeout, systemd, docker stop) ends `peft dashboard` with exit 0, as Ctrl-C does; it used to keep running.</summary>
    [Fact]
    public async Task SigtermStopsTheDashboard()
    {
        if (OperatingSystem.IsWindows()) return;
        string run = TestPaths.TempDir();
        new MetricsLog(run).Append(new System.Text.Json.Nodes.JsonObject { ["step"] = 1, ["loss"] = 1.0 });
        using var p = PeftProcess.Start(["dashboard", run, "--port", "0"]);
        try
        {
            _ = p.StandardError.ReadToEndAsync();
            string? line;
            while ((line = await p.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60))) is not null && !line.StartsWith("dashboard http", StringComparison.Ordinal)) { }
            Assert.NotNull(line);
            using (var kill = System.Diagnostics.Process.Start("kill", ["-TERM", p.Id.ToString()])) await kill.WaitForExitAsync();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(20));
            Assert.Equal(0, p.ExitCode);
        }
        finally { if (!p.HasExited) p.Kill(entireProcessTree: true); }
    }

    /// <summary>
    /// A run whose `peft train` process is gone without a summary.json (killed; metrics.jsonl empty, as before a first
    /// step) reads "stopped" on the dashboard; it used to read "running" forever. While the process lives it reads "running".
    /// </summary>
    [Fact]
    public async Task ARunWhoseTrainProcessIsGoneReadsStopped()
    {
        if (OperatingSystem.IsWindows()) return;
        string dir = TestPaths.TempDir(), data = ReversalTask.Write(dir, 8), run = Path.Combine(dir, "run");
        string metrics = Path.Combine(run, MetricsLog.FileName);
        using (var p = PeftProcess.Start(["train", "--model", TestPaths.TinyLlama, "--data", data, "--out", run, "--method", "lora",
                   "--steps", "100000", "--batch", "4", "--max-seq", "32"]))
        {
            try
            {
                _ = p.StandardOutput.ReadToEndAsync();
                var err = p.StandardError.ReadToEndAsync();
                var deadline = DateTime.UtcNow.AddMinutes(2);
                while (!File.Exists(metrics) && !p.HasExited && DateTime.UtcNow < deadline) await Task.Delay(50);
                Assert.False(p.HasExited, $"peft train ended early: {(p.HasExited ? await err : "")}");
                Assert.Equal("running", await State(run));
                // What train recorded names it beyond the pid.
                var plan = PeftSharp.IO.JsonFile.ReadObject(Path.Combine(run, DashboardRuns.RunPlanFile));
                Assert.Equal(p.Id, plan["pid"]!.GetValue<int>());
                Assert.Equal(Environment.MachineName, plan["host"]!.GetValue<string>());
                if (OperatingSystem.IsLinux()) Assert.True(plan["start_ticks"]!.GetValue<long>() > 0 && plan["boot_id"]!.GetValue<string>().Length > 0, plan.ToJsonString());
            }
            finally { p.Kill(entireProcessTree: true); p.WaitForExit(); }
        }
        File.WriteAllText(metrics, "");   // killed before its first record
        Assert.False(File.Exists(Path.Combine(run, DashboardRuns.SummaryFile)));
        Assert.Equal("stopped", await State(run));
    }

    /// <summary>
    /// run-plan.json names the trainer by host, boot and /proc start time beside its pid, and the state uses them: a
    /// folder from another machine reads "elsewhere" (it read "running" when its pid happened to live here, "stopped"
    /// otherwise, even while it trained there), a pid now held by another process reads "stopped" even when that one
    /// started within the 2 s the older check allowed, and a reboot since reads "stopped". Records without the new
    /// fields keep their old reading.
    /// </summary>
    [Fact]
    public async Task TheTrainerIsNamedByHostBootAndStartTimeNotItsPidAlone()
    {
        if (!OperatingSystem.IsLinux()) return;
        string run = TestPaths.TempDir();
        new MetricsLog(run).Append(new JsonObject { ["step"] = 1, ["loss"] = 1.0 });
        // This test process stands for the trainer: it is alive, so its pid is live here.
        int pid = Environment.ProcessId;
        DateTime started;
        using (var self = System.Diagnostics.Process.GetCurrentProcess()) started = self.StartTime.ToUniversalTime();
        string boot = File.ReadAllText("/proc/sys/kernel/random/boot_id").Trim();
        long ticks = long.Parse(File.ReadAllText($"/proc/{pid}/stat").Split(')')[^1].Split(' ', StringSplitOptions.RemoveEmptyEntries)[19]);
        JsonObject Record(string host, string bootId, long startTicks, int id = 0) => new()
        {
            ["pid"] = id == 0 ? pid : id, ["process_start"] = started, ["host"] = host, ["boot_id"] = bootId, ["start_ticks"] = startTicks,
        };
        async Task<string> StateWith(JsonObject? plan)
        {
            string file = Path.Combine(run, DashboardRuns.RunPlanFile);
            if (plan is null) File.Delete(file); else File.WriteAllText(file, plan.ToJsonString());
            return await State(run);
        }

        Assert.Equal("running", await StateWith(Record(Environment.MachineName, boot, ticks)));
        Assert.Equal("stopped", await StateWith(Record(Environment.MachineName, boot, ticks + 1)));   // pid reused 10 ms later
        Assert.Equal("stopped", await StateWith(Record(Environment.MachineName, Guid.NewGuid().ToString(), ticks)));   // rebooted since
        Assert.Equal("elsewhere", await StateWith(Record("another-machine", Guid.NewGuid().ToString(), ticks)));
        Assert.Equal("elsewhere", await StateWith(Record("another-machine", Guid.NewGuid().ToString(), 5, id: int.MaxValue)));
        // Older records: pid and .NET's start time, or nothing.
        Assert.Equal("running", await StateWith(new JsonObject { ["pid"] = pid, ["process_start"] = started }));
        Assert.Equal("stopped", await StateWith(new JsonObject { ["pid"] = pid, ["process_start"] = started.AddMinutes(-5) }));
        Assert.Equal("stopped", await StateWith(new JsonObject { ["pid"] = int.MaxValue, ["process_start"] = started }));
        Assert.Equal("running", await StateWith(new JsonObject { ["method"] = "lora" }));
        Assert.Equal("running", await StateWith(null));
    }

    static async Task<string> State(string run)
    {
        await using var server = await DashboardServer.StartAsync(run, port: 0);
        using var http = new HttpClient();
        var info = await http.GetFromJsonAsync<JsonObject>(new Uri(server.BaseAddress, $"api/metrics?run={Path.GetFileName(run)}"));
        return info!["state"]!.GetValue<string>();
    }
}
