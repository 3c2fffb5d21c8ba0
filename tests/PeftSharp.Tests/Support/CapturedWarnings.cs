using Microsoft.Extensions.Logging;
using PeftSharp.Tests.Serving;

namespace PeftSharp.Tests;

/// <summary>
/// The library's warnings raised by the calling test while this lives, taken from the ILogger they go through
/// (<see cref="PeftLogging.Redirect"/>): flow-local, so tests running in parallel do not see each other's.
/// </summary>
public sealed class CapturedWarnings : IDisposable
{
    readonly CapturedLogs _logs = new();
    readonly IDisposable _scope;

    public CapturedWarnings() => _scope = PeftLogging.Redirect(_logs.CreateLogger("PeftSharp"));

    /// <summary>The messages logged at Warning level, in order.</summary>
    public IReadOnlyList<string> Messages => _logs.Entries.Where(e => e.Level == LogLevel.Warning).Select(e => e.Message).ToList();

    public void Dispose() => _scope.Dispose();
}
