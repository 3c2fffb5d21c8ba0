using System.Runtime.InteropServices;

namespace PeftSharp.Cli;

/// <summary>
/// For the commands that stop gracefully (train saves a resumable checkpoint, dashboard stops its server): Ctrl-C and
/// SIGTERM both cancel <paramref name="cts"/> instead of ending the process. SIGTERM is what `kill`, `timeout`, systemd
/// and `docker stop` send; train took only Ctrl-C, so a terminated run died at once and lost every step since its last
/// checkpoint (with the default --save-interval 0: all of them), where Ctrl-C saved one.
/// </summary>
internal sealed class StopSignals(CancellationTokenSource cts) : IDisposable
{
    readonly PosixSignalRegistration _term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; cts.Cancel(); });
    readonly ConsoleCancelEventHandler _ctrlC = (_, e) => { e.Cancel = true; cts.Cancel(); };

    /// <summary>Until disposed, Ctrl-C and SIGTERM cancel <paramref name="cts"/>.</summary>
    public static IDisposable Cancel(CancellationTokenSource cts)
    {
        var s = new StopSignals(cts);
        Console.CancelKeyPress += s._ctrlC;
        return s;
    }

    public void Dispose()
    {
        Console.CancelKeyPress -= _ctrlC;
        _term.Dispose();
    }
}
