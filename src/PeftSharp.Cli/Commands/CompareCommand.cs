using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.Cli.Compare;
using PeftSharp.Training.Methods;
using Spectre.Console;
using Spectre.Console.Cli;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// peft compare: trains each method on the same model, task and step budget, each in a fresh `peft train` child
/// process (so its peak resident set is its own), then tabulates trainable parameters, peak memory, step time,
/// inference overhead, exact match and forgetting. Writes compare.md and compare.json to --out.
/// </summary>
public sealed class CompareCommand : Command<CompareCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--methods <LIST>")] [Description("Comma list (default: full,lora,dora,qlora,qdora,adapter,prompt; dpo and orpo may be added: they train on the preference data)")]
        public string Methods { get; set; } = string.Join(",", MethodOptions.Names);
        [CommandOption("--steps <N>")] [Description("Optimiser steps per method")] [DefaultValue(150)]
        public int Steps { get; set; } = 150;
        [CommandOption("--ranks <LIST>")] [Description("LoRA ranks to sweep, e.g. 2,8,64")] [DefaultValue("8")]
        public string Ranks { get; set; } = "8";
        [CommandOption("--targets <SETS>")] [Description("';'-separated target sets, e.g. \"q_proj,v_proj;all-linear\"")] [DefaultValue("all-linear")]
        public string Targets { get; set; } = "all-linear";
        [CommandOption("--out <DIR>")] [Description("Folder for the runs and the table (default: runs/compare-<time>)")]
        public string? Out { get; set; }
        [CommandOption("--model <DIR>")] public string? Model { get; set; }
        [CommandOption("--data <FILE>")] public string? Data { get; set; }
        [CommandOption("--eval-file <FILE>")] public string? EvalFile { get; set; }
        [CommandOption("--heldout <FILE>")] public string? Heldout { get; set; }
        [CommandOption("--batch <N>")] [DefaultValue(16)] public int Batch { get; set; } = 16;
        [CommandOption("--seed <S>")] [DefaultValue(42)] public int Seed { get; set; } = 42;
        [CommandOption("--overhead-reps <N>")] [Description("Forwards timed per inference-overhead measurement")] [DefaultValue(30)]
        public int OverheadReps { get; set; } = 30;
        [CommandOption("--reuse")] [Description("Reuse runs already finished in --out (their summary.json) instead of training them again")]
        public bool Reuse { get; set; }

        public IReadOnlyList<string> MethodList => Methods.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        public IReadOnlyList<string> TargetSets => Targets.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        public IReadOnlyList<int> RankList => Ranks.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(r => int.TryParse(r, out int v) && v > 0 ? v : throw new ArgumentException($"--ranks: '{r}' is not a positive integer")).ToList();

        public override ValidationResult Validate()
        {
            if (MethodList.FirstOrDefault(m => !MethodOptions.Names.Contains(m) && !PeftSharp.Training.Preference.PreferenceOptions.IsPreferenceMethod(m)) is { } bad)
                return ValidationResult.Error($"--methods: '{bad}' is not one of {string.Join(", ", MethodOptions.Names)}, dpo, orpo");
            if (MethodList.Count == 0) return ValidationResult.Error("--methods: no method given");
            try { _ = RankList; }
            catch (ArgumentException e) { return ValidationResult.Error(e.Message); }
            if (TargetSets.Count == 0) return ValidationResult.Error("--targets: no target set given");
            if (Steps <= 0) return ValidationResult.Error($"--steps must be positive (got {Steps})");
            if (Batch <= 0) return ValidationResult.Error($"--batch must be positive (got {Batch})");
            if (OverheadReps <= 0) return ValidationResult.Error($"--overhead-reps must be positive (got {OverheadReps})");
            if (Data is not null && !File.Exists(Data)) return ValidationResult.Error($"--data: file '{Data}' not found");
            if (CliOptions.OutFolderIsAFile(Out) is { } outIsFile) return outIsFile;
            if (Model is null) return ValidationResult.Success();
            var resolved = HubCli.TryResolve(Model, "--model", out var folder);
            Model = folder;
            return resolved;
        }

        /// <summary>The `peft train` arguments of one run (every run shares the task, budget and seed).</summary>
        public List<string> TrainArgs(CompareRun run, string runDir)
        {
            var a = new List<string> { "train", "--method", run.Method, "--steps", Steps.ToString(CultureInfo.InvariantCulture), "--out", runDir, "--overwrite",
                "--batch", Batch.ToString(CultureInfo.InvariantCulture), "--seed", Seed.ToString(CultureInfo.InvariantCulture),
                // Evaluate before and after only: exact match is generation, the slowest part of a short run.
                "--eval-interval", Steps.ToString(CultureInfo.InvariantCulture),
                // One compute dtype for every method: auto would give the LoRA family bf16 and the others fp32.
                "--compute-dtype", "fp32" };
            if (run.Rank is int r) a.AddRange(["--rank", r.ToString(CultureInfo.InvariantCulture)]);
            if (run.Targets is { } t) a.AddRange(["--targets", t]);
            foreach (var (flag, value) in new[] { ("--model", Model), ("--data", Data), ("--eval-file", EvalFile), ("--heldout", Heldout) })
                if (value is not null) a.AddRange([flag, Path.GetFullPath(value)]);
            return a;
        }
    }

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        string outDir = Path.GetFullPath(s.Out ?? Path.Combine("runs", $"compare-{DateTime.Now:yyyyMMdd-HHmmss}"));
        Directory.CreateDirectory(outDir);
        string baseDir = s.Model ?? Path.Combine(TrainSettings.DemoDir, "base");
        var runs = CompareRun.Expand(s.MethodList, s.RankList, s.TargetSets);
        var rows = new List<CompareRow>();
        foreach (var run in runs)
        {
            if (cancellationToken.IsCancellationRequested) break;
            string runDir = Path.Combine(outDir, run.Slug);
            AnsiConsole.MarkupLineInterpolated($"[bold]{run.Label}[/]: peft {string.Join(' ', s.TrainArgs(run, runDir))}");
            var clock = Stopwatch.StartNew();
            bool reuse = s.Reuse && File.Exists(Path.Combine(runDir, Reports.RunSummary.JsonFile));
            int rc = reuse ? 0 : RunTrain(s.TrainArgs(run, runDir), Path.Combine(outDir, run.Slug + ".log"), cancellationToken);
            CompareRow row;
            try
            {
                if (rc != 0) throw new InvalidOperationException($"peft train exited {rc} (see {run.Slug}.log)");
                row = CompareRow.Read(run, runDir);
                row = row with { InferenceOverhead = InferenceOverhead.Measure(baseDir, run, row.FinalDir!, s.OverheadReps) };
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                row = CompareRow.Failed(run, e.Message);
            }
            rows.Add(row);
            AnsiConsole.MarkupLineInterpolated($"  {(row.Error is null ? reuse ? "reused" : "done" : "[red]failed[/]: " + row.Error)} in {clock.Elapsed.TotalSeconds:F0} s");
        }

        var table = new Table().Title($"{s.Steps} steps per method");
        foreach (var h in CompareRow.Header) table.AddColumn(h == "method" ? new TableColumn(h) : new TableColumn(h).RightAligned());
        foreach (var r in rows) table.AddRow(r.Cells().Select(Markup.Escape).ToArray());
        AnsiConsole.Write(table);
        PeftSharp.IO.AtomicFile.WriteAllText(Path.Combine(outDir, "compare.md"), Markdown(s, rows));
        PeftSharp.IO.AtomicFile.WriteAllText(Path.Combine(outDir, "compare.json"),
            new JsonObject { ["steps"] = s.Steps, ["rows"] = new JsonArray(rows.Select(r => (JsonNode)r.Json()).ToArray()) }.ToJsonString(new() { WriteIndented = true }));
        AnsiConsole.MarkupLineInterpolated($"[bold]table[/] {Path.Combine(outDir, "compare.md")} (compare.json, one run folder and log per method beside it)");
        return rows.Any(r => r.Error is not null) ? 1 : 0;
    }

    public static string Markdown(Settings s, IReadOnlyList<CompareRow> rows)
    {
        var sb = new StringBuilder("# Method comparison\n\n");
        sb.AppendLine($"Same model, task and seed; {s.Steps} optimiser steps of batch {s.Batch} each, every method in its own `peft train` process. " +
                      "Peak memory is that process's peak resident set; step time the median gap between steps in metrics.jsonl; inference overhead " +
                      "the fastest forward against the fastest base forward (LoRA family merged into the dense base; adapters and soft prompts unmerged); " +
                      "exact match on the eval prompts after training; held-out perplexity before -> after shows forgetting.\n");
        sb.AppendLine("| " + string.Join(" | ", CompareRow.Header) + " |");
        sb.AppendLine("|" + string.Concat(CompareRow.Header.Select(_ => "---|")));
        foreach (var r in rows) sb.AppendLine("| " + string.Join(" | ", r.Cells()) + " |");
        return sb.ToString();
    }

    /// <summary>Runs `peft train` in a child process of the same build, its output going to <paramref name="log"/>.</summary>
    internal static int RunTrain(IReadOnlyList<string> args, string log, CancellationToken token)
    {
        string dll = typeof(CompareCommand).Assembly.Location;
        string host = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";
        var psi = new ProcessStartInfo(host) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("could not start peft train");
        using var writer = new StreamWriter(log);
        var gate = new object();
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (gate) writer.WriteLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (gate) writer.WriteLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        using (token.Register(() => { try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } }))
            p.WaitForExit();
        token.ThrowIfCancellationRequested();
        return p.ExitCode;
    }
}
