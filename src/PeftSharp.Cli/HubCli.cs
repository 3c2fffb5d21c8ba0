using PeftSharp.Hub;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli;

/// <summary>
/// The one resolver of --model / --adapter values for every command: an existing folder as is, a Hugging Face repo id
/// (ORG/NAME[@REVISION]) as its snapshot folder in the shared cache, downloaded first with a progress bar on stderr
/// (stdout stays the command's own output).
/// </summary>
public static class HubCli
{
    /// <summary>The folder <paramref name="value"/> names; an IOException with one line naming <paramref name="flag"/> otherwise.</summary>
    public static string ResolveFolder(string value, string flag)
    {
        if (Directory.Exists(value) || File.Exists(value) || !RepoId.TryParse(value, out _)) return ModelLocation.Resolve(value, flag);
        try { return Download(value); }
        catch (IOException e) { throw new IOException($"{flag}: no folder '{value}', and as a Hub repo: {e.Message}", e); }
    }

    /// <summary>A repo id's snapshot folder, downloaded where needed with a progress bar on stderr; errors name the repo.
    /// <paramref name="only"/> limits the files (config.json alone for `peft plan`).</summary>
    public static string Download(string repoId, Func<string, bool>? only = null)
    {
        var repo = RepoId.Parse(repoId);
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        Action<string> onLockWait = file => console.MarkupLineInterpolated($"[grey]{file}: waiting for another download of the same file[/]");
        // Not a terminal (a log, CI, a pipe): no live bar, one line per file when it is done.
        if (!console.Profile.Capabilities.Interactive)
            return ModelLocation.Download(repo, progress: new LineProgress(console), onLockWait: onLockWait, only: only);
        string folder = "";
        console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new DownloadedColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
            .Start(ctx => folder = ModelLocation.Download(repo, progress: new SpectreProgress(ctx), onLockWait: onLockWait, only: only));
        return folder;
    }

    /// <summary>
    /// `peft plan --model`: an existing config.json or folder as is, else a Hub repo id as its snapshot folder holding
    /// config.json alone (the planner needs nothing else; the weights are not fetched). Errors: one line naming <paramref name="flag"/>.
    /// </summary>
    public static ValidationResult TryResolveConfig(string value, string flag, out string folder)
    {
        folder = value;
        if (File.Exists(value) || Directory.Exists(value) || !RepoId.TryParse(value, out _)) return ValidationResult.Success();
        try { folder = Download(value, only: f => f == "config.json"); }
        catch (IOException e) { return ValidationResult.Error($"{flag}: no folder '{value}', and as a Hub repo: {e.Message}"); }
        return ValidationResult.Success();
    }

    /// <summary>Settings validation in one call: the flag's value resolved to a folder, or the error as a validation result.</summary>
    public static ValidationResult TryResolve(string value, string flag, out string folder)
    {
        folder = value;
        try { folder = ResolveFolder(value, flag); }
        catch (IOException e) { return ValidationResult.Error(e.Message); }
        return ValidationResult.Success();
    }

    /// <summary>"file: 1.2 MB in 0.4 s (3.0 MB/s)" once per downloaded file.</summary>
    sealed class LineProgress(IAnsiConsole console) : IProgress<DownloadProgress>
    {
        readonly Dictionary<string, (long From, System.Diagnostics.Stopwatch Clock)> _started = [];
        readonly HashSet<string> _done = [];

        public void Report(DownloadProgress p)
        {
            lock (_started)
            {
                if (!_started.TryGetValue(p.File, out var s)) _started[p.File] = s = (p.Done, System.Diagnostics.Stopwatch.StartNew());
                if (p.Done < p.Total || !_done.Add(p.File)) return;
                double seconds = Math.Max(s.Clock.Elapsed.TotalSeconds, 1e-3);
                string resumed = s.From > 0 ? $", resumed at {Size(s.From)}" : "";
                console.WriteLine($"{p.File}: {Size(p.Total)} in {seconds:0.0} s ({Size((long)((p.Total - s.From) / seconds))}/s{resumed})");
            }
        }

        static string Size(long bytes) => bytes switch
        {
            >= 1L << 30 => $"{bytes / (double)(1L << 30):0.00} GiB",
            >= 1L << 20 => $"{bytes / (double)(1L << 20):0.0} MiB",
            >= 1L << 10 => $"{bytes / 1024.0:0.0} KiB",
            _ => $"{bytes} B",
        };
    }

    /// <summary>Spectre tasks, one per file, fed by the downloader's reports (called from its thread; tasks lock themselves).</summary>
    sealed class SpectreProgress(ProgressContext ctx) : IProgress<DownloadProgress>
    {
        readonly Dictionary<string, ProgressTask> _tasks = [];

        public void Report(DownloadProgress p)
        {
            ProgressTask? task;
            lock (_tasks)
                if (!_tasks.TryGetValue(p.File, out task))
                    _tasks[p.File] = task = ctx.AddTask(Markup.Escape(p.File), maxValue: Math.Max(1, p.Total));
            task.Value = p.Done;
            if (p.Done >= p.Total) task.StopTask();
        }
    }
}
