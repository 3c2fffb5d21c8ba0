using System.Diagnostics;

namespace PeftSharp.Tests;

/// <summary>
/// Runs the `peft` apphost beside the test assembly in a fresh process: for what an in-process CliCapture run cannot
/// show (what a process settles once: MKL's code path, the CLI's own warning logger).
/// </summary>
public static class PeftProcess
{
    /// <summary>Exit code, stdout and stderr; <paramref name="env"/> sets (or with a null value removes) variables.</summary>
    public static (int Code, string Out, string Err) Run(IEnumerable<string> args, IReadOnlyDictionary<string, string?>? env = null)
    {
        var psi = new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, OperatingSystem.IsWindows() ? "peft.exe" : "peft"))
        { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        foreach (var (k, v) in env ?? new Dictionary<string, string?>()) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout, stderr.Result);
    }
}
