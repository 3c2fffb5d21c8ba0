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
        ProcessMemory.ReturnLargeFreesToOs(); // resident memory then follows the live tensors, as the plan counts them
        ModelSettings.ApplyThreads(s.Threads);
        using (zeros(1)) { } // load libtorch first, so the runtime's resident set counts as runtime, not activations
        long runtimeBytes = ProcessMemory.Read().RssBytes;
        var clock = Stopwatch.StartNew();
        if (s.Resume is not null) RestoreOptions(context, s);
        if (s.IsPreference) return PreferenceTrain.Execute(context, s, cancellationToken, runtimeBytes);
        string outDir = s.OutDir();
        var methodOptions = s.MethodOptions();
        var options = s.TrainerOptions(outDir);
        CheckOutDir(options);
        using var reporter = RunReporters.Open(s.ReportTo, outDir, fresh: s.Resume is null);

        var config = PeftSharp.Models.ModelConfig.Load(s.ModelDir);
        using var tokenizer = TextTokenizer.FromFolder(s.ModelDir, config);
        var chat = ChatCli.Prompter(s.ModelDir, s.ChatTemplate);
        var data = TrainingData.Load(s.DataFile, tokenizer, options, chat);
        AnsiConsole.MarkupLineInterpolated($"[bold]data[/] {s.DataFile}: {data.TrainStats}");
        if (data.TrainStats.Truncated > 0)
            AnsiConsole.MarkupLineInterpolated($"[yellow]warning[/]: {data.TrainStats.Truncated} example(s) longer than --max-seq {options.MaxSeqLength} were truncated ({data.TrainStats.TokensCut} tokens cut)");

        var plan = RunPlan.For(s.ModelDir, methodOptions, options, data.Train, runtimeBytes);
        AnsiConsole.MarkupLine("[bold]memory plan[/] (peft plan, for this run on this device)");
        PlanOutput.Write(plan);
        reporter.Scalar("memory/planned_peak_mb", plan.TotalBytes / 1048576.0, 0);

        var device = ModelSettings.ResolveDevice(s.Device);
        var (model, method) = MethodFactory.Create(s.ModelDir, methodOptions, tokenizer, device, seed: s.Seed);
        using var _ = model;
        if (options.GradientCheckpointing) GradientCheckpointing.Enable(model);
        AnsiConsole.MarkupLineInterpolated($"[bold]method[/] {method.Description}");
        DashboardRuns.WriteRunPlan(outDir, method.Description, options.TotalSteps(new BatchLoader(data.Train, options.BatchSize, options.Seed).BatchesPerEpoch), plan.TotalBytes);

        var heldout = s.HeldoutPath is { } hp ? TrainingData.Load(hp, tokenizer, options.MaxSeqLength, packing: false).Train.Take(64).ToList() : null;
        double? heldoutBefore = heldout is null ? null : Evaluator.Run(model, heldout, [], tokenizer.EosId, options.BatchSize).Loss;

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
        Console.CancelKeyPress += onCancel;
        var records = new List<JsonObject>();
        if (s.Resume is null) SavedTrainOptions.Save(s, outDir);   // before the first checkpoint, so any stop can resume
        reporter.Text("config", SavedTrainOptions.Markdown(outDir), 0);
        TrainResult result;
        try
        {
            result = RunWithProgress(model, method, options, data, tokenizer.EosId, records, reporter, cts.Token);
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
        if (s.Resume is not null) SavedTrainOptions.Save(s, outDir);   // the checkpoint loaded: overrides given now stick
        if (result.FinalDir is null)
        {
            AnsiConsole.MarkupLineInterpolated($"stopped at step {result.Steps}; resume with: ./peft train --resume {outDir}");
            return 130;
        }

        ChatCli.Record(result.FinalDir, chat, tokenizer, config);
        double? heldoutAfter = heldout is null ? null : Evaluator.Run(model, heldout, [], tokenizer.EosId, options.BatchSize, method: method).Loss;
        long peak = ProcessMemory.Read().PeakRssBytes;
        // A finished run always ends with a checkpoint (the Trainer saves one before final/).
        string optimizerFile = Path.Combine(Checkpoint.Resolve(outDir), Checkpoint.Optimizer);
        var measured = MeasuredMemory.From(model, method, runtimeBytes, peak, optimizerFile);

        RunPlots.Loss(records, Path.Combine(outDir, "loss.png"));
        RunPlots.Memory(plan, measured, Path.Combine(outDir, "memory.png"));
        var summary = new RunSummary(s, method.Description, data, plan, measured, result, heldoutBefore, heldoutAfter, clock.Elapsed, records);
        summary.WriteConsole();
        PeftSharp.IO.AtomicFile.WriteAllText(Path.Combine(outDir, RunSummary.JsonFile),
            summary.Json(method.TrainableParameters.Sum(p => p.P.numel()), model.ParameterCount()).ToJsonString(new() { WriteIndented = true }));
        string report = Path.Combine(outDir, "report.md");
        PeftSharp.IO.AtomicFile.WriteAllText(report, summary.Markdown());
        reporter.Scalar("memory/measured_peak_mb", measured.Peak / 1048576.0, result.Steps);
        reporter.Text("report", summary.Markdown(), result.Steps);
        AnsiConsole.MarkupLineInterpolated($"[bold]report[/] {report} (metrics.jsonl, loss.png, memory.png beside it); adapter: {result.FinalDir}");
        return 0;
    }

    /// <summary>
    /// Before any loading, for SFT and DPO/ORPO alike: --resume needs a checkpoint (a run killed during its first one leaves
    /// only its temp folder, removed here; the message says to restart with --overwrite), and a folder holding a run
    /// needs --overwrite or --resume.
    /// </summary>
    internal static void CheckOutDir(TrainerOptions options)
    {
        string outDir = options.OutDir;
        if (options.ResumeFrom is { } resume && Checkpoint.TryResolve(resume) is null)
        {
            RunFolder.RemoveInterruptedSaves(outDir);
            throw new InvalidOperationException($"{resume}: no checkpoint to resume from (the run stopped before its first one); " +
                $"start it again, replacing that folder: ./peft train <its options> --out {outDir} --overwrite");
        }
        if (options.ResumeFrom is null && !options.Overwrite && RunFolder.HoldsRun(outDir))
            throw new InvalidOperationException($"{outDir}: already holds a training run; pass --overwrite to replace it or --resume {outDir} to continue it");
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

    static TrainResult RunWithProgress(CausalLM model, ITrainingMethod method, TrainerOptions options, TrainingData data, int? eos,
        List<JsonObject> records, IRunReporter reporter, CancellationToken token)
    {
        TrainResult? result = null;
        var progress = AnsiConsole.Progress().AutoClear(false).HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn());
        progress.Start(ctx =>
        {
            var task = ctx.AddTask("starting", maxValue: 1);
            var trainer = new Trainer(model, method, options, eos)
            {
                Log = m => AnsiConsole.MarkupLineInterpolated($"[grey]{m}[/]"),
                Cancellation = token,
                OnRecord = r =>
                {
                    records.Add(r);
                    reporter.Record(r);
                    if (r["loss"] is not null)
                    {
                        int total = options.MaxSteps ?? 0;
                        task.MaxValue = Math.Max(task.MaxValue, total > 0 ? total : r["step"]!.GetValue<int>() + 1);
                        task.Value = r["step"]!.GetValue<int>();
                        task.Description = $"step {r["step"]} loss {r["loss"]!.GetValue<double>():F3} " +
                                           $"{r["tokens_per_s"]!.GetValue<double>():F0} tok/s mem {r["rss_mb"]!.GetValue<double>():F0} MB";
                    }
                },
            };
            result = trainer.Train(data);
            task.Value = task.MaxValue;
        });
        return result!;
    }
}
