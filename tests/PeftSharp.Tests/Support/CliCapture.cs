using PeftSharp.Cli;
using Spectre.Console;

namespace PeftSharp.Tests;

/// <summary>
/// Runs `peft ARGS` in-process with its stdout (plain and Spectre.Console) and stderr captured. The console is
/// process-wide, so the test classes that run the CLI share the "console" collection.
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
        try { return (CliApp.Run(args), stdout.ToString(), stderr.ToString()); }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
            AnsiConsole.Console = oldAnsi;
        }
    }
}
