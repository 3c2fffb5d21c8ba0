using System.Diagnostics;
using System.Text.Json.Nodes;
using PeftSharp.Cli.Reports;
using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Training.Preference;
using Spectre.Console;
using Spectre.Console.Cli;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// `peft train --method dpo|orpo`: the memory plan (the pair batch and the reference pass included), preference training
/// of an --adapter-method adapter, then reward accuracy and exact match before/after on held-out pairs, forgetting,
/// measured memory, a report, metrics and plots (loss, reward accuracy and margin).
/// With the demo and no --init-adapter, DPO starts from the demo's SFT adapter (runs/demo-sft/final, trained first
/// in-process with `peft train`'s demo defaults when absent); ORPO, which teaches the task through its NLL term, starts
/// from the base.
/// </summary>
public static class PreferenceTrain
{
    public const string DemoSftRun = "runs/demo-sft";

    public static int Execute(CommandContext context, TrainSettings s, CancellationToken cancellationToken, long runtimeBytes)
    {
        var clock = Stopwatch.StartNew();
        string outDir = s.OutDir();
        var methodOptions = s.MethodOptions();
        var prefOptions = s.PreferenceOptions();
        var options = s.TrainerOptions(outDir);
        using var runLock = TrainCommand.CheckOutDir(options);
        using var reporter = PeftSharp.Training.Reporting.RunReporters.Open(s.ReportTo, outDir, fresh: s.Resume is null);
        if (s.Dropout > 0) AnsiConsole.MarkupLine("[yellow]warning[/]: --dropout is ignored by dpo/orpo: dropout stays off so that policy and reference differ only by the adapter (TRL's disable_dropout)");

        string? initAdapter = s.InitAdapter;
        if (initAdapter is null && s.UsesDemo && s.Model is null && prefOptions.Method == PreferenceMethod.Dpo)
            initAdapter = DemoSftAdapter(s.Device, s.Threads, cancellationToken);

        var config = ModelConfig.Load(s.ModelDir);
        using var tokenizer = TextTokenizer.FromFolder(s.ModelDir, config);
        var chat = ChatCli.Prompter(s.ModelDir, s.ChatTemplate);
        var data = PreferenceData.Load(s.DataFile, tokenizer, options.MaxSeqLength, options.EvalFile, options.EvalSplit, options.Seed, chat);
        AnsiConsole.MarkupLineInterpolated($"[bold]data[/] {s.DataFile}: {data.TrainStats}");
        if (data.TrainStats.Truncated + data.TrainStats.Dropped > 0)
            AnsiConsole.MarkupLineInterpolated($"[yellow]warning[/]: {data.TrainStats.Truncated} pair(s) cut to --max-seq {options.MaxSeqLength} (first: {data.TrainStats.FirstTruncated ?? "none"}), {data.TrainStats.Dropped} dropped (first: {data.TrainStats.FirstDropped ?? "none"})");
        if (data.EvalStats is { } es) AnsiConsole.MarkupLineInterpolated($"[bold]eval[/] {options.EvalFile ?? "held-out split"}: {es}");

        var plan = RunPlan.ForPreference(s.ModelDir, methodOptions, options, data.Train.Count, data.Train.Max(p => Math.Max(p.Chosen.Length, p.Rejected.Length)), runtimeBytes);
        AnsiConsole.MarkupLine("[bold]memory plan[/] (peft plan, for this run on this device: the pair batch of 2 x --batch sequences; the reference pass runs without grad before the policy pass)");
        PlanOutput.Write(plan);
        reporter.Scalar("memory/planned_peak_mb", plan.TotalBytes / 1048576.0, 0);

        var device = ModelSettings.ResolveDevice(s.Device);
        var (model, method, reference) = PreferenceSetup.Create(s.ModelDir, methodOptions, initAdapter, tokenizer, device, s.Seed);
        using var _ = model;
        if (options.GradientCheckpointing) PeftSharp.Quantization.GradientCheckpointing.Enable(model);
        var objective = new PreferenceObjective(prefOptions, prefOptions.Method == PreferenceMethod.Dpo ? reference : null);
        AnsiConsole.MarkupLineInterpolated($"[bold]method[/] {s.Method.ToUpperInvariant()} (beta {prefOptions.Beta}{(prefOptions.Method == PreferenceMethod.Dpo ? $", {prefOptions.LossType.ToString().ToLowerInvariant()} loss, reference: {reference.Description}" : ", no reference")}) on {method.Description}");

        // Batches per epoch as PairLoader makes them (one per BatchSize pairs).
        PeftSharp.Serving.Dashboard.DashboardRuns.WriteRunPlan(outDir, $"{s.Method.ToUpperInvariant()} on {method.Description}",
            options.TotalSteps((data.Train.Count + options.BatchSize - 1) / options.BatchSize), plan.TotalBytes);
        var heldout = s.HeldoutPath is { } hp ? PeftSharp.Data.TrainingData.Load(hp, tokenizer, options.MaxSeqLength, packing: false).Train.Take(64).ToList() : null;
        double? heldoutBefore = heldout is null ? null : Evaluator.Run(model, heldout, [], tokenizer.EosId, options.BatchSize, method: method).Loss;

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var stop = StopSignals.Cancel(cts);   // Ctrl-C or SIGTERM: the trainer saves a checkpoint and returns
        var records = new List<JsonObject>();
        if (s.Resume is null) SavedTrainOptions.Save(s, outDir);
        reporter.Text("config", SavedTrainOptions.Markdown(outDir), 0);
        PreferenceTrainResult result;
        try
        {
            var trainer = new PreferenceTrainer(model, method, options, objective, tokenizer.EosId)
            {
                Log = m => AnsiConsole.MarkupLineInterpolated($"[grey]{m}[/]"),
                Cancellation = cts.Token,
                OnRecord = rec =>
                {
                    records.Add(rec);
                    reporter.Record(rec);
                    if (rec["loss"] is not null && (rec["step"]!.GetValue<int>() % 10 == 0 || rec["step"]!.GetValue<int>() == 1))
                        AnsiConsole.MarkupLineInterpolated($"step {rec["step"]} loss {rec["loss"]!.GetValue<double>():F4} reward acc {rec["rewards/accuracies"]!.GetValue<double>():P0} margin {rec["rewards/margins"]!.GetValue<double>():F3} mem {rec["rss_mb"]!.GetValue<double>():F0} MB");
                },
            };
            result = trainer.Train(data);
        }
        finally
        {
            stop.Dispose();   // a Ctrl-C from here on ends the process as usual
        }
        if (s.Resume is not null) SavedTrainOptions.Save(s, outDir);
        if (result.FinalDir is null)
        {
            // After Ctrl-C the trainer has said where it saved and how to resume; say it here only for other stops.
            if (!cts.IsCancellationRequested || result.Steps == 0)
                AnsiConsole.MarkupLineInterpolated($"stopped at step {result.Steps}; resume with: ./peft train --resume {outDir}");
            return 130;
        }

        ChatCli.Record(result.FinalDir, chat, tokenizer, config);
        double? heldoutAfter = heldout is null ? null : Evaluator.Run(model, heldout, [], tokenizer.EosId, options.BatchSize, method: method).Loss;
        long peak = PeftSharp.Training.ProcessMemory.Read().PeakRssBytes;
        string optimizerFile = Path.Combine(Checkpoint.Resolve(outDir), Checkpoint.Optimizer);
        var measured = MeasuredMemory.From(model, method, runtimeBytes, peak, optimizerFile);

        RunPlots.Loss(records, Path.Combine(outDir, "loss.png"));
        RunPlots.Rewards(records, Path.Combine(outDir, "rewards.png"));
        RunPlots.Memory(plan, measured, Path.Combine(outDir, "memory.png"));
        var summary = new PreferenceSummary(s, method.Description, initAdapter, reference.Description, data, plan, measured, result, heldoutBefore, heldoutAfter, clock.Elapsed);
        summary.WriteConsole();
        PeftSharp.IO.AtomicFile.WriteAllText(Path.Combine(outDir, RunSummary.JsonFile),
            summary.Json(method.TrainableParameters.Sum(p => p.P.numel()), model.ParameterCount()).ToJsonString(new() { WriteIndented = true }));
        string report = Path.Combine(outDir, "report.md");
        PeftSharp.IO.AtomicFile.WriteAllText(report, summary.Markdown());
        reporter.Scalar("memory/measured_peak_mb", measured.Peak / 1048576.0, result.Steps);
        reporter.Text("report", summary.Markdown(), result.Steps);
        AnsiConsole.MarkupLineInterpolated($"[bold]report[/] {report} (metrics.jsonl, loss.png, rewards.png, memory.png beside it); adapter: {result.FinalDir}");
        return 0;
    }

    /// <summary>The demo's SFT adapter: runs/demo-sft/final, trained first (QLoRA, the demo defaults of `peft train`) when absent.</summary>
    static string DemoSftAdapter(string device, int? threads, CancellationToken token)
    {
        string final = Path.Combine(DemoSftRun, "final");
        if (File.Exists(Path.Combine(final, "adapter_config.json")))
        {
            AnsiConsole.MarkupLineInterpolated($"[bold]init adapter[/] the demo's SFT adapter {final} (delete {DemoSftRun} to retrain it)");
            return final;
        }
        // In a child process, so that this run's peak resident set is its own.
        string log = DemoSftRun + ".log";
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(log))!);
        AnsiConsole.MarkupLineInterpolated($"[bold]init adapter[/] no demo SFT adapter yet: training it first with ./peft train --out {DemoSftRun} (log: {log})");
        var args = new List<string> { "train", "--out", DemoSftRun, "--overwrite", "--device", device };
        if (threads is int t) args.AddRange(["--threads", t.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        int rc = CompareCommand.RunTrain(args, log, token);
        if (rc != 0) throw new InvalidOperationException($"training the demo SFT adapter into {DemoSftRun} failed (exit {rc}; see {log})");
        var sft = PeftSharp.IO.JsonFile.ReadObject(Path.Combine(DemoSftRun, RunSummary.JsonFile));
        AnsiConsole.MarkupLineInterpolated($"[bold]init adapter[/] SFT done: exact match {sft["exact_match_before"]} -> {sft["exact_match_after"]}, peak {sft["peak_rss_bytes"]} bytes");
        return final;
    }
}
