using PeftSharp.Cli;
using Spectre.Console;

namespace PeftSharp.Tests;

/// <summary>
/// Runs `peft ARGS` in-process with its stdout (plain and Spectre.Console) and stderr captured. The console is
/// process-wide, so the test classes that run the CLI share the "console" collection. The library's warnings raised by
/// this run (its async flow) go to its stderr as the CLI writes them; other tests' warnings, raised meanwhile on their
/// own flows, go to the test process's logger (TestWarnings), not into this run's stderr.
/// </summary>
public static class CliCapture
{
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (oldOut, oldErr, oldAnsi) = (Console.Out, Console.Error, AnsiConsole.Console);
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        Console.SetOut(stdout);
        Console.SetError(stderr);
        AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stdout) });
        using var warnings = PeftLogging.Redirect(StderrWarnings.Instance);
        try { return (CliApp.Run(args), stdout.ToString(), stderr.ToString()); }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
            AnsiConsole.Console = oldAnsi;
        }
    }

    /// <summary>The CLI's output as one line of plain text: ANSI styling removed, the console's line wrapping undone.</summary>
    public static string Plain(string stdout) =>
        System.Text.RegularExpressions.Regex.Replace(System.Text.RegularExpressions.Regex.Replace(stdout, @"\e\[[0-9;]*m", ""), @"\s+", " ");
}
