using System.Diagnostics;
using System.Text.Json.Nodes;
using PeftSharp.Cli.Reports;
using PeftSharp.Data;
using PeftSharp.Memory;
using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using PeftSharp.Training.Reporting;
using PeftSharp.Serving.Dashboard;
using Spectre.Console;
using Spectre.Console.Cli;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft train: the memory plan, then training with a live progress bar, then measured memory beside the plan,
/// before/after accuracy and forgetting, a report, metrics and plots. Ctrl-C saves a resumable checkpoint.
/// </summary>
public sealed class TrainCommand : Command<TrainSettings>
{
    public override int Execute(CommandContext context, TrainSettings s, CancellationToken cancellationToken)
    {
        using var dashboard = TrainDashboard.StartIfAsked(s);   // before loading anything: a port in use fails fast
        int rc = Run(context, s, cancellationToken);
        dashboard?.AfterRun(rc, cancellationToken);
        return rc;
    }

    static int Run(CommandContext context, TrainSettings s, CancellationToken cancellationToken)
    {
        PeftSharp.Native.TensorAllocator.Ensure(); // before the first tensor: resident memory follows the live tensors, as the plan counts them
        ModelSettings.ApplyThreads(s.Threads);
        using (zeros(1)) { } // load libtorch first, so the runtime's resident set counts as runtime, not activations
        long runtimeBytes = ProcessMemory.Read().RssBytes;
        var clock = Stopwatch.StartNew();
        if (s.Resume is not null) RestoreOptions(context, s);
        if (!s.IsPreference) MethodFactory.RefuseQuantisedCheckpoint(s.ModelDir, s.MethodOptions());   // before any output
        var compute = s.Compute();
        s.ComputeDtype = compute.Name;   // train-options.json keeps what ran, so a resume computes in the same dtype
        AnsiConsole.MarkupLineInterpolated($"[bold]compute[/] {compute.Name} ({compute.Reason})");
        if (compute.Warning is { } slow) AnsiConsole.MarkupLineInterpolated($"[yellow]warning[/]: --compute-dtype {compute.Name}: {slow}");
        AnsiConsole.MarkupLineInterpolated($"[bold]cpu matmul[/] {PeftSharp.Kernels.MklCodePath.Description}");
        AnsiConsole.MarkupLineInterpolated($"[bold]cpu allocator[/] {PeftSharp.Native.TensorAllocator.Description}");
        if (s.IsPreference) return PreferenceTrain.Execute(context, s, cancellationToken, runtimeBytes);
        string outDir = s.OutDir();
        var methodOptions = s.MethodOptions();
        var options = s.TrainerOptions(outDir);
        using var runLock = CheckOutDir(options);
        using var reporter = RunReporters.Open(s.ReportTo, outDir, fresh: s.Resume is null);

        var config = PeftSharp.Models.ModelConfig.Load(s.ModelDir);
        using var tokenizer = TextTokenizer.FromFolder(s.ModelDir, config);
        var chat = ChatCli.Prompter(s.ModelDir, s.ChatTemplate);
        var data = TrainingData.Load(s.DataFile, tokenizer, options, chat);
        AnsiConsole.MarkupLineInterpolated($"[bold]data[/] {s.DataFile}: {data.TrainStats}");
        if (data.TrainStats.Truncated > 0)
            AnsiConsole.MarkupLineInterpolated($"[yellow]warning[/]: {data.TrainStats.Truncated} example(s) longer than --max-seq {options.MaxSeqLength} were truncated ({data.TrainStats.TokensCut} tokens cut)");
        int longest = data.Train.Select(t => t.Length).DefaultIfEmpty(0).Max();
        if (CliOptions.PastContext($"the longest training sequence ({longest} tokens)", longest, config.MaxPositionEmbeddings) is { } past)
            AnsiConsole.MarkupLineInterpolated($"[yellow]warning[/]: {past}; --max-seq {config.MaxPositionEmbeddings} keeps within it");

        var plan = RunPlan.For(s.ModelDir, methodOptions, options, data.Train,
            evaluates: data.Eval.Count > 0 || data.EvalPrompts.Count > 0 || s.HeldoutPath is not null, runtimeBytes);
        AnsiConsole.MarkupLine("[bold]memory plan[/] (peft plan, for this run on this device)");
        PlanOutput.Write(plan);
        reporter.Scalar("memory/planned_peak_mb", plan.TotalBytes / 1048576.0, 0);

        DashboardRuns.WriteRunPlan(outDir, methodOptions.Method, options.TotalSteps(new BatchLoader(data.Train, options.BatchSize, options.Seed).BatchesPerEpoch), plan.TotalBytes);

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var stop = StopSignals.Cancel(cts);   // Ctrl-C or SIGTERM: the trainer saves a checkpoint and returns
        var records = new List<JsonObject>();
        if (s.Resume is null) SavedTrainOptions.Save(s, outDir);   // before the first checkpoint, so any stop can resume
        reporter.Text("config", SavedTrainOptions.Markdown(outDir), 0);
        var run = new FineTuneOptions
        {
            Model = s.ModelDir, Data = data, Chat = chat, Method = methodOptions, Trainer = options, Seed = s.Seed,
            Device = ModelSettings.ResolveDevice(s.Device), HeldoutFile = s.HeldoutPath, Logger = new ConsoleLogger(),
        };
        FineTuneResult result;
        try
        {
            result = RunWithProgress(run, records, reporter, cts.Token);
        }
        finally
        {
            stop.Dispose();   // a Ctrl-C from here on ends the process as usual
        }
        if (s.Resume is not null) SavedTrainOptions.Save(s, outDir);   // the checkpoint loaded: overrides given now stick
        if (result.Train.FinalDir is null)
        {
            // After Ctrl-C the trainer has said where it saved and how to resume; say it here only for other stops.
            if (!cts.IsCancellationRequested || result.Train.Steps == 0)
                AnsiConsole.MarkupLineInterpolated($"stopped at step {result.Train.Steps}; resume with: ./peft train --resume {outDir}");
            return 130;
        }

        long peak = ProcessMemory.Read().PeakRssBytes;
        // A finished run always ends with a checkpoint (the Trainer saves one before final/).
        string optimizerFile = Path.Combine(Checkpoint.Resolve(outDir), Checkpoint.Optimizer);
        var measured = MeasuredMemory.From(result, runtimeBytes, peak, optimizerFile);

        RunPlots.Loss(records, Path.Combine(outDir, "loss.png"));
        RunPlots.Memory(plan, measured, Path.Combine(outDir, "memory.png"));
        var summary = new RunSummary(s, result.MethodDescription, data, plan, measured, result.Train, result.HeldoutLossBefore, result.HeldoutLossAfter, clock.Elapsed, records);
        summary.WriteConsole();
        PeftSharp.IO.AtomicFile.WriteAllText(Path.Combine(outDir, RunSummary.JsonFile),
            summary.Json(result.TrainableParameters, result.TotalParameters).ToJsonString(new() { WriteIndented = true }));
        string report = Path.Combine(outDir, "report.md");
        PeftSharp.IO.AtomicFile.WriteAllText(report, summary.Markdown());
        reporter.Scalar("memory/measured_peak_mb", measured.Peak / 1048576.0, result.Train.Steps);
        reporter.Text("report", summary.Markdown(), result.Train.Steps);
        AnsiConsole.MarkupLineInterpolated($"[bold]report[/] {report} (metrics.jsonl, loss.png, memory.png beside it); adapter: {result.Train.FinalDir}");
        if (PeftSharp.Native.TensorAllocator.Cached) AnsiConsole.MarkupLineInterpolated($"[bold]cpu allocator[/] {PeftSharp.Native.TensorBlockCache.Summary()}");
        return 0;
    }

    /// <summary>
    /// Before any loading, for SFT and DPO/ORPO alike: --resume needs a checkpoint (a run killed during its first one leaves
    /// only its temp folder, removed here; the message says to restart with --overwrite), and a folder holding a run
    /// needs --overwrite or --resume.
    /// </summary>
    internal static RunLock CheckOutDir(TrainerOptions options)
    {
        string outDir = options.OutDir;
        // Before anything is written there (options, plan, reporters): a second `peft train` into the folder stops here.
        var held = RunLock.Acquire(outDir);
        try
        {
            if (options.ResumeFrom is { } resume && Checkpoint.TryResolve(resume) is null)
            {
                RunFolder.RemoveInterruptedSaves(outDir);
                throw new InvalidOperationException($"{resume}: no checkpoint to resume from (the run stopped before its first one); " +
                    $"start it again, replacing that folder: ./peft train <its options> --out {outDir} --overwrite");
            }
            if (options.ResumeFrom is null && !options.Overwrite && RunFolder.HoldsRun(outDir))
                throw new InvalidOperationException($"{outDir}: already holds a training run; pass --overwrite to replace it or --resume {outDir} to continue it");
            return held;
        }
        catch
        {
            held.Dispose();
            throw;
        }
    }

    /// <summary>--resume: the options the run was started with come back, except those given again now.</summary>
    static void RestoreOptions(CommandContext context, TrainSettings s)
    {
        if (SavedTrainOptions.Find(s.Resume!) is not { } file)
        {
            AnsiConsole.MarkupLineInterpolated($"[yellow]warning[/]: {s.Resume} has no {SavedTrainOptions.FileName}; resuming with the options given now (they must be the run's)");
            return;
        }
        var overridden = SavedTrainOptions.Restore(s, file, context.Arguments);
        AnsiConsole.MarkupLineInterpolated($"[bold]resume[/] with the run's options from {file}");
        foreach (var o in overridden) AnsiConsole.MarkupLineInterpolated($"[yellow]changed[/] {o}");
        var valid = s.Validate();
        if (!valid.Successful) throw new ArgumentException($"{file}: {valid.Message}");
    }

    /// <summary>The library run under a live progress bar; the run's notes print as grey lines above it.</summary>
    static FineTuneResult RunWithProgress(FineTuneOptions run, List<JsonObject> records, IRunReporter reporter, CancellationToken token)
    {
        FineTuneResult? result = null;
        var progress = AnsiConsole.Progress().AutoClear(false).HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn());
        progress.Start(ctx =>
        {
            var task = ctx.AddTask("starting", maxValue: 1);
            var onStep = new InlineProgress<TrainingProgress>(p =>
            {
                var r = p.Record;
                records.Add(r);
                reporter.Record(r);
                if (p.Loss is not double loss) return;
                int total = p.TotalSteps ?? 0;
                task.MaxValue = Math.Max(task.MaxValue, total > 0 ? total : p.Step + 1);
                task.Value = p.Step;
                task.Description = $"step {p.Step} loss {loss:F3} {r["tokens_per_s"]!.GetValue<double>():F0} tok/s mem {r["rss_mb"]!.GetValue<double>():F0} MB";
            });
            result = FineTune.Run(run, onStep, token);
            task.Value = task.MaxValue;
        });
        return result!;
    }

    /// <summary>Reports on the caller's thread, in order (Progress&lt;T&gt; would post to the thread pool).</summary>
    sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
