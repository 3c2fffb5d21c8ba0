using System.Text.Json.Nodes;

namespace PeftSharp.Serving.Dashboard;

/// <summary>
/// Which process trains a run, as run-plan.json records it, and whether that process still lives, as seen from the
/// machine the dashboard runs on. A pid alone is not enough: a run folder copied from (or shared with) another machine
/// names a pid of that machine, and pids are reused. So the record holds the host name and, on Linux, the boot id
/// (/proc/sys/kernel/random/boot_id) and the process's start time in clock ticks since boot (/proc/PID/stat field 22),
/// which together name one process exactly; .NET's Process.StartTime is that time converted through the boot time,
/// which moves with clock adjustments, so it was compared within 2 s and a pid reused within them read "running".
/// </summary>
internal static class TrainerProcess
{
    /// <summary>The fields run-plan.json records for the current process.</summary>
    public static IEnumerable<KeyValuePair<string, JsonNode?>> Current()
    {
        yield return new("pid", Environment.ProcessId);
        // Kept for readers of older records (and where /proc is absent): the start time as .NET gives it.
        using (var self = System.Diagnostics.Process.GetCurrentProcess())
            yield return new("process_start", self.StartTime.ToUniversalTime());
        yield return new("host", Environment.MachineName);
        if (BootId() is { } boot) yield return new("boot_id", boot);
        if (StartTicks(Environment.ProcessId) is { } ticks) yield return new("start_ticks", ticks);
    }

    /// <summary>
    /// "running", "stopped" (the process is gone: no such pid, another process under it, or the machine rebooted since),
    /// or "elsewhere" (it runs, or ran, on another machine: nothing here can tell whether it is alive). A plan naming no
    /// process (written before pids were recorded) reads "running", as the page read it then.
    /// </summary>
    public static string State(JsonNode? plan)
    {
        if (plan?["pid"] is not JsonValue id || !id.TryGetValue(out int pid)) return "running";
        if (Text(plan, "host") is { } host && !string.Equals(host, Environment.MachineName, StringComparison.OrdinalIgnoreCase)) return "elsewhere";
        if (Text(plan, "boot_id") is { } boot && BootId() is { } now && boot != now) return "stopped";   // rebooted: every process of then is gone
        if (plan["start_ticks"] is JsonValue t && t.TryGetValue(out long recorded) && Directory.Exists("/proc"))
            return StartTicks(pid) == recorded ? "running" : "stopped";
        return LegacyAlive(pid, plan) ? "running" : "stopped";
    }

    /// <summary>The older check: a process with the pid, started within 2 s of process_start (no process_start: alive).</summary>
    static bool LegacyAlive(int pid, JsonNode plan)
    {
        if (plan["process_start"] is not JsonValue start || !start.TryGetValue(out DateTime started)) return true;
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            return !p.HasExited && Math.Abs((p.StartTime.ToUniversalTime() - started.ToUniversalTime()).TotalSeconds) <= 2;
        }
        catch (ArgumentException) { return false; }   // no such process
        catch (InvalidOperationException) { return false; }   // exited while asked
    }

    static string? Text(JsonNode plan, string key) => plan[key] is JsonValue v && v.TryGetValue(out string? s) && !string.IsNullOrEmpty(s) ? s : null;

    /// <summary>This boot of this machine (Linux), or null.</summary>
    static string? BootId()
    {
        try { return File.ReadAllText("/proc/sys/kernel/random/boot_id").Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>
    /// Field 22 of /proc/PID/stat (start time, clock ticks after boot), or null when there is no such process (or no
    /// /proc, or it has exited and awaits its parent). The command name (field 2) is in parentheses and may hold spaces or parentheses, so fields are counted
    /// after the last ')'.
    /// </summary>
    internal static long? StartTicks(int pid)
    {
        string stat;
        try { stat = File.ReadAllText($"/proc/{pid}/stat"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
        var fields = stat[(stat.LastIndexOf(')') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        // fields[0] is field 3 (state), so field 22 is fields[19]. A zombie (Z, X: exited, not yet reaped) is gone.
        return fields.Length > 19 && fields[0] is not ("Z" or "X") && long.TryParse(fields[19], out long ticks) ? ticks : null;
    }
}
