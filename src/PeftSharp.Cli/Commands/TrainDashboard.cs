using PeftSharp.Serving.Dashboard;
using Spectre.Console;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// `peft train --dashboard`: the live page for the run folder, started before anything loads (a port in use fails
/// fast), served while training runs. When the run ends: in a terminal it keeps serving until Ctrl-C (the user is
/// probably looking at it), otherwise (stdin redirected: CI, scripts, `peft compare`'s children) it stops at once.
/// </summary>
public sealed class TrainDashboard : IDisposable
{
    readonly DashboardServer _server;

    TrainDashboard(DashboardServer server) => _server = server;

    public static TrainDashboard? StartIfAsked(TrainSettings s)
    {
        if (!s.Dashboard) return null;
        var server = DashboardCommand.Start(s.OutDir(), s.DashboardPort, "--dashboard-port", live: true);
        AnsiConsole.MarkupLineInterpolated($"[bold]dashboard[/] {server.BaseAddress} (live page of {s.OutDir()})");
        return new TrainDashboard(server);
    }

    /// <summary>After the run (exit code <paramref name="rc"/>): keeps serving until Ctrl-C when interactive and the run finished.</summary>
    public void AfterRun(int rc, CancellationToken cancellationToken)
    {
        if (rc != 0 || Console.IsInputRedirected) return;
        AnsiConsole.MarkupLineInterpolated($"run finished; dashboard still at {_server.BaseAddress}, Ctrl-C to exit");
        DashboardCommand.WaitForCtrlC(_server, cancellationToken);
    }

    public void Dispose() => _server.DisposeAsync().AsTask().GetAwaiter().GetResult();
}
