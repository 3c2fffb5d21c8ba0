using System.Diagnostics;

namespace PeftSharp.Tests;

/// <summary>
/// Runs the `peft` apphost beside the test assembly in a fresh process: for what an in-process CliCapture run cannot
/// show (what a process settles once: MKL's code path, the allocator, the CLI's own warning logger).
/// </summary>
public static class PeftProcess
{
    /// <summary>Exit code, stdout and stderr; <paramref name="env"/> sets (or with a null value removes) variables.</summary>
    public static (int Code, string Out, string Err) Run(IEnumerable<string> args, IReadOnlyDictionary<string, string?>? env = null)
    {
        using var p = Start(args, env);
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout, stderr.Result);
    }

    /// <summary>Starts one without waiting (a server), stdout and stderr redirected; <paramref name="env"/> as in <see cref="Run"/>.</summary>
    public static Process Start(IEnumerable<string> args, IReadOnlyDictionary<string, string?>? env = null)
    {
        var psi = new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, OperatingSystem.IsWindows() ? "peft.exe" : "peft"))
        { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        foreach (var (k, v) in env ?? new Dictionary<string, string?>()) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }
}
