using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace PeftSharp;

/// <summary>
/// Where the library's warnings go (base weights holding NaN, unknown adapter config keys, a base mismatch allowed,
/// truncated training examples): an <see cref="ILogger"/>, silent by default (<see cref="NullLogger"/>). An app plugs
/// its own (e.g. from its ILoggerFactory); the `peft` CLI plugs one that writes "warning: ..." to stderr. A caller that
/// wants one call's warnings elsewhere (a request's logger, or a warning it expects and collects) uses
/// <see cref="Redirect"/>, which changes nothing for other threads.
/// </summary>
public static class PeftLogging
{
    // The redirect of the current async flow: an AsyncLocal, so concurrent callers (parallel tests, server requests)
    // each see only their own, where swapping Logger would steal the others' warnings.
    static readonly AsyncLocal<ILogger?> _redirect = new();

    /// <summary>The logger the library's warnings go to (unless <see cref="Redirect"/>ed).</summary>
    public static ILogger Logger { get; set; } = NullLogger.Instance;

    /// <summary>
    /// Sends the warnings raised in this async flow (this thread's code from here, what it awaits and the tasks it
    /// starts) to <paramref name="logger"/> instead of <see cref="Logger"/> until the returned scope is disposed.
    /// </summary>
    /// <param name="logger">Where the warnings go meanwhile (<see cref="NullLogger.Instance"/> drops them).</param>
    /// <returns>Dispose it to restore the previous destination.</returns>
    public static IDisposable Redirect(ILogger logger)
    {
        var previous = _redirect.Value;
        _redirect.Value = logger;
        return new Restore(previous);
    }

    sealed class Restore(ILogger? previous) : IDisposable
    {
        public void Dispose() => _redirect.Value = previous;
    }

    /// <summary>One warning through the current flow's logger (<see cref="Redirect"/>, else <see cref="Logger"/>).</summary>
    internal static void Warn(string message) => (_redirect.Value ?? Logger).LogWarning("{Warning}", message);
}
