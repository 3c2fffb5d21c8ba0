using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;

namespace PeftSharp.Tests.Support;

/// <summary>
/// The test process's global warning logger: drops what no test collects. Tests that expect a warning collect their own
/// flow's (CapturedWarnings, CliCapture); without this, the first in-process CLI run would install its stderr logger for
/// the whole process (CliApp.Run does where none is set), and another test's warning, raised on its own flow while a CLI
/// test captures the console, would land in that test's stderr (a CI run saw four extra lines in a one-line error).
/// </summary>
sealed class TestWarnings : ILogger
{
    static readonly TestWarnings Instance = new();

#pragma warning disable CA2255 // a test assembly's one-time environment setup
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() => PeftLogging.Logger = Instance;

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => false;
    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) { }
}
