using Microsoft.Extensions.Logging;

namespace PeftSharp.Cli;

/// <summary>The CLI's logger for the library's warnings: "warning: ..." lines on stderr (the stream read at each write, so redirection works).</summary>
public sealed class StderrWarnings : ILogger
{
    public static readonly StderrWarnings Instance = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (IsEnabled(logLevel)) Console.Error.WriteLine($"warning: {formatter(state, exception)}");
    }
}
