using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace PeftSharp;

/// <summary>
/// Where the library's warnings go (base weights holding NaN, unknown adapter config keys, a base mismatch allowed,
/// truncated training examples): an <see cref="ILogger"/>, silent by default (<see cref="NullLogger"/>). An app plugs
/// its own (e.g. from its ILoggerFactory); the `peft` CLI plugs one that writes "warning: ..." to stderr.
/// </summary>
public static class PeftLogging
{
    /// <summary>The logger the library's warnings go to.</summary>
    public static ILogger Logger { get; set; } = NullLogger.Instance;

    /// <summary>One warning through <see cref="Logger"/>.</summary>
    internal static void Warn(string message) => Logger.LogWarning("{Warning}", message);
}
