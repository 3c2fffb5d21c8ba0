using System.ComponentModel;
using PeftSharp.Serving.Dashboard;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft dashboard DIR: the training dashboard of a run folder (finished or still being written by `peft train`) or of a
/// `peft compare` folder (every method's curves together), on 127.0.0.1 until Ctrl-C or SIGTERM.
/// </summary>
public sealed class DashboardCommand : Command<DashboardCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<DIR>")] [Description("A `peft train` run folder (holding metrics.jsonl) or a `peft compare` folder")]
        public string Dir { get; set; } = "";
        [CommandOption("--port <N>")] [Description("Port on 127.0.0.1 (0 = any free one)")] [DefaultValue(8001)]
        public int Port { get; set; } = 8001;

        public override ValidationResult Validate() =>
            Port is < 0 or > 65535 ? ValidationResult.Error($"--port must be in 0..65535 (got {Port})") : ValidationResult.Success();
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        var server = Start(s.Dir, s.Port, "--port", live: false);
        try
        {
            AnsiConsole.MarkupLineInterpolated($"[bold]dashboard[/] {server.BaseAddress} ({server.Runs.Folder}: {string.Join(", ", server.Runs.Names())}); Ctrl-C to stop");
            WaitForCtrlC(server, cancellationToken);
        }
        finally { server.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
        return 0;
    }

    /// <summary>Starts the dashboard; a port in use becomes one line naming <paramref name="portFlag"/>.</summary>
    internal static DashboardServer Start(string dir, int port, string portFlag, bool live)
    {
        try { return DashboardServer.StartAsync(dir, port, live).GetAwaiter().GetResult(); }
        catch (DashboardPortInUseException e) { throw new InvalidOperationException($"{portFlag} {port}: {e.Message}"); }
    }

    internal static void WaitForCtrlC(DashboardServer server, CancellationToken cancellationToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        // SIGTERM (kill, timeout, systemd, docker stop) stops it too: the web host takes SIGTERM and only stops itself,
        // which left this wait, and the process, running.
        using var stop = StopSignals.Cancel(cts);
        server.WaitAsync(cts.Token).GetAwaiter().GetResult();
    }
}
