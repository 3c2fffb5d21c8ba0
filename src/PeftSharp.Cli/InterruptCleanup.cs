using System.Runtime.InteropServices;
using PeftSharp.IO;

namespace PeftSharp.Cli;

/// <summary>
/// For the commands that write model-sized files (quantize, merge, export): on Ctrl-C or SIGTERM, just before the process
/// ends as it would anyway (exit 130 / 143), remove the temp files and folders of the saves in progress
/// (<see cref="AtomicFile.RemoveInFlight"/>) and the staging folders the command names. The output was never
/// half-written (saves rename at the end), but a hidden temp file as large as the model stayed beside it.
/// </summary>
internal sealed class InterruptCleanup : IDisposable
{
    readonly PosixSignalRegistration[] _registrations;

    InterruptCleanup(string[] staging) =>
        _registrations = [.. new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM }.Select(signal => PosixSignalRegistration.Create(signal, _ => Clean(staging)))];

    /// <summary>Cleans up on Ctrl-C/SIGTERM until disposed; <paramref name="staging"/>: folders to remove as well.</summary>
    public static IDisposable Register(params string[] staging) => new InterruptCleanup(staging);

    // The handler leaves the signal's default action (ending the process) in place.
    static void Clean(string[] staging)
    {
        AtomicFile.RemoveInFlight();
        foreach (var dir in staging)
            try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
            catch (IOException) { }
    }

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
    }
}
