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
        if (Directory.Exists(value) || !RepoId.TryParse(value, out _)) return ModelLocation.Resolve(value, flag);
        try { return Download(value); }
        catch (IOException e) { throw new IOException($"{flag}: no folder '{value}', and as a Hub repo: {e.Message}", e); }
    }

    /// <summary>A repo id's snapshot folder, downloaded where needed with a progress bar on stderr; errors name the repo.</summary>
    public static string Download(string repoId)
    {
        var repo = RepoId.Parse(repoId);
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        string folder = "";
        console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new DownloadedColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
            .Start(ctx => folder = ModelLocation.Download(repo, progress: new SpectreProgress(ctx),
                onLockWait: file => console.MarkupLineInterpolated($"[grey]{file}: waiting for another download of the same file[/]")));
        return folder;
    }

    /// <summary>Settings validation in one call: the flag's value resolved to a folder, or the error as a validation result.</summary>
    public static ValidationResult TryResolve(string value, string flag, out string folder)
    {
        folder = value;
        try { folder = ResolveFolder(value, flag); }
        catch (IOException e) { return ValidationResult.Error(e.Message); }
        return ValidationResult.Success();
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
