using Microsoft.Extensions.Logging;
using Spectre.Console;

namespace PeftSharp.Cli;

/// <summary>
/// The CLI's logger for library notes (FineTune's method line, resume notes): information as grey lines, warnings in
/// yellow, written through Spectre.Console so they stay above a live progress bar.
/// </summary>
public sealed class ConsoleLogger : ILogger
{
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel)) return;
        string text = Markup.Escape(formatter(state, exception));
        AnsiConsole.MarkupLine(logLevel >= LogLevel.Warning ? $"[yellow]warning[/]: {text}" : $"[grey]{text}[/]");
    }
}
