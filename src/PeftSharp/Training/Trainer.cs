using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Training.Optim;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>What a training run did.</summary>
/// <param name="Steps">Optimiser steps taken (in all, counting those before a resume).</param>
/// <param name="LastLoss">Training loss of the last step (mean cross entropy per target token).</param>
/// <param name="FirstEval">The first evaluation (before training), null without eval data.</param>
/// <param name="LastEval">The last evaluation (after training), null without eval data.</param>
/// <param name="FinalDir">The folder the trained artefact (adapter or model) was saved in; null when the run stopped before the end.</param>
/// <param name="Elapsed">Wall-clock time of this process's part of the run.</param>
public sealed record TrainResult(int Steps, double LastLoss, EvalResult? FirstEval, EvalResult? LastEval, string? FinalDir, TimeSpan Elapsed);

/// <summary>
/// The method-agnostic training loop: causal-LM loss on the labels, gradient accumulation, clipping, a learning-rate
/// schedule, periodic evaluation and checkpoints, exact resume. The method decides which parameters train and how
/// the result is saved; the optimiser factory decides how they are updated.
/// Output folder (<see cref="RunFolder"/>): run.json (options), metrics.jsonl, checkpoints/step-NNNNNN/, final/ (the method's artefact).
/// </summary>
internal sealed class Trainer
{
    readonly CausalLM _model;
    readonly ITrainingMethod _method;
    readonly TrainerOptions _o;
    readonly int? _eosId;
    readonly Func<IReadOnlyList<(string Name, Parameter Param)>, TrainerOptions, IOptimizer> _optimizerFactory;

    /// <summary>"4x2" (batch x accumulation), the batch as the run fills it: no batch holds more rows than the data has,
    /// so a 3-row file at --batch 16 says "3x1 (--batch 16: the data has 3 rows)".</summary>
    internal static string BatchText(TrainerOptions o, int rows, string unit = "rows") =>
        BatchLoader.RowsPerBatch(o.BatchSize, rows) is var filled && filled == o.BatchSize
            ? $"{o.BatchSize}x{o.GradientAccumulation}"
            : $"{filled}x{o.GradientAccumulation} (--batch {o.BatchSize}: the data has {rows} {unit})";

    /// <summary>Human-readable progress and notices.</summary>
    public Action<string>? Log { get; init; }
    /// <summary>Turns ids into text: with it, eval records carry the first exact-match prompts with the model's answers ("samples").</summary>
    public Func<IEnumerable<int>, string>? Decode { get; init; }
    /// <summary>Every record written to metrics.jsonl, as it is written.</summary>
    public Action<JsonObject>? OnRecord { get; init; }
    /// <summary>Called after each optimiser step with the step number (1-based).</summary>
    public Action<int>? OnStep { get; init; }
    /// <summary>Ctrl-C: the run stops after the current step and saves a resumable checkpoint.</summary>
    public CancellationToken Cancellation { get; init; }

    public Trainer(CausalLM model, ITrainingMethod method, TrainerOptions options, int? eosId,
        Func<IReadOnlyList<(string Name, Parameter Param)>, TrainerOptions, IOptimizer>? optimizerFactory = null)
    {
        _model = model; _method = method; _o = options; _eosId = eosId;
        _optimizerFactory = optimizerFactory ?? DefaultOptimizer;
        if (options.GradientAccumulation < 1) throw new ArgumentException($"gradient accumulation {options.GradientAccumulation} must be at least 1");
    }

    /// <summary>The run's <see cref="TrainerOptions.Optimizer"/> with its learning rate and weight decay; paged variants keep their state in OutDir/paged-state.</summary>
    public static IOptimizer DefaultOptimizer(IReadOnlyList<(string Name, Parameter Param)> ps, TrainerOptions o) =>
        OptimizerFactory.Create(o.Optimizer, ps, o, Path.Combine(o.OutDir, "paged-state"));

    public TrainResult Train(TrainingData data)
    {
        var clock = Stopwatch.StartNew();
        using var runLock = RunLock.Acquire(_o.OutDir);   // before RunFolder.Open clears leftovers: no other process's save in progress
        var run = RunFolder.Open(_o, OnRecord);

        var parameters = _method.TrainableParameters.ToList();
        if (parameters.Count == 0) throw new InvalidOperationException($"{_method.Description}: no trainable parameters");
        var trainable = parameters.Select(p => p.P).ToList();
        using var optimizer = _optimizerFactory(parameters, _o);
        var loader = new BatchLoader(data.Train, _o.BatchSize, _o.Seed) { PadId = _eosId ?? 0 };
        int totalSteps = _o.TotalSteps(loader.BatchesPerEpoch);
        var schedule = new LrSchedule(_o.Schedule, _o.LearningRate, _o.WarmupSteps, totalSteps);
        Log?.Invoke($"{_method.Description}; {data.TrainStats}; {totalSteps} steps of {BatchText(_o, data.Train.Count)} sequences");
        // HF's schedulers do the same (warm-up first, whatever the run's length), silently: a short run then never trains
        // at the rate it asked for.
        if (totalSteps > 0 && _o.WarmupSteps > totalSteps)
            Log?.Invoke(FormattableString.Invariant($"warm-up of {_o.WarmupSteps} steps is longer than the run's {totalSteps}: the learning rate rises to {schedule.At(totalSteps - 1):G3} at the last step, never the {_o.LearningRate:G3} asked (a warm-up of at most {totalSteps} steps reaches it)"));

        int step = 0;
        EvalResult? first = null, last = null;
        // A fresh run seeds the global RNG (dropout masks follow the run's seed); a resume restores the checkpoint's RNG.
        if (run.Resume(_method, optimizer, totalSteps, data.Train.Count) is { } state)
        {
            loader.Position = state.DataPosition;
            step = state.Step;
            first = last = run.Metrics.EvalAt(0);   // the "before" figures, measured by the process that started the run
            Log?.Invoke($"resumed from {run.ResumeCheckpoint} at step {step}");
        }
        WriteRunFile(run);

        bool hasEval = data.Eval.Count > 0 || data.EvalPrompts.Count > 0;
        if (hasEval && step == 0) first = last = Evaluate(data, 0, clock, run);

        using var packing = FrozenWeightPacking.Apply(_model, _o.PackFrozenWeights, FrozenWeightPacking.TypicalRows(data.Train.Select(t => t.Length), _o.BatchSize, _o.MaxSeqLength));
        Log?.Invoke(packing.Description);
        Native.TensorAllocator.StartSteps();   // the buffer cache's cap: the steps' peak, not loading's or evaluation's
        double lastLoss = double.NaN;
        int ranThisProcess = 0;
        while (step < totalSteps && (_o.StopAfterSteps is not int stop || ranThisProcess < stop) && !Cancellation.IsCancellationRequested)
        {
            var stepClock = Stopwatch.StartNew();
            var (loss, gradNorm, tokens) = TrainStep(loader, optimizer, trainable, schedule.At(step));
            if (!double.IsFinite(loss) || !double.IsFinite(gradNorm))
                throw run.Diverged(loss, gradNorm, step + 1, "Try a lower learning rate or gradient clipping");
            step++; ranThisProcess++;
            if (ranThisProcess == 1) Native.TensorAllocator.StartSteps();   // again: the optimiser state and gradients now exist
            lastLoss = loss;
            var (rss, peak) = ProcessMemory.Read();
            run.Record(new JsonObject
            {
                ["step"] = step, ["loss"] = loss, ["lr"] = schedule.At(step - 1), ["grad_norm"] = MetricsLog.Round(gradNorm),
                ["tokens"] = tokens,   // with tokens_per_s, the step's time: the run's tokens/s is the sum over the sum (RunSummary)
                ["tokens_per_s"] = MetricsLog.Round(tokens / Math.Max(1e-9, stepClock.Elapsed.TotalSeconds), 4),
                ["elapsed_s"] = MetricsLog.Round(clock.Elapsed.TotalSeconds, 4),
                ["rss_mb"] = MetricsLog.Round(rss / 1048576.0, 4), ["peak_rss_mb"] = MetricsLog.Round(peak / 1048576.0, 4),
            });
            OnStep?.Invoke(step);
            if (hasEval && _o.EvalInterval > 0 && step % _o.EvalInterval == 0 && step < totalSteps) last = Evaluate(data, step, clock, run);
            if (_o.SaveInterval > 0 && step % _o.SaveInterval == 0 && step < totalSteps) run.Save(_method, optimizer, loader.Position, step, totalSteps, schedule.At(step - 1));
        }
        _model.eval(); // TrainStep left it in training mode; whatever runs next (eval, save, generation) is inference
        Native.TensorAllocator.ReleaseIdle();   // the steps are over: evaluation, saves and generation start from the live tensors
        if (step < totalSteps && Cancellation.IsCancellationRequested && step > 0)
        {
            string ckpt = run.Save(_method, optimizer, loader.Position, step, totalSteps, schedule.At(step - 1));
            Log?.Invoke($"interrupted at step {step}: saved {ckpt}; continue with --resume {_o.OutDir}");
        }
        if (step < totalSteps) return new TrainResult(step, lastLoss, first, last, null, clock.Elapsed);

        if (hasEval) last = Evaluate(data, step, clock, run);
        run.Save(_method, optimizer, loader.Position, step, totalSteps, schedule.At(step - 1));
        string finalDir = Path.Combine(_o.OutDir, "final");
        _method.Save(finalDir);
        Log?.Invoke($"saved {finalDir} after {step} steps in {clock.Elapsed.TotalSeconds:F1}s");
        return new TrainResult(step, lastLoss, first, last, finalDir, clock.Elapsed);
    }

    (double Loss, double GradNorm, long Tokens) TrainStep(BatchLoader loader, IOptimizer optimizer, IReadOnlyList<Parameter> trainable, double lr)
    {
        _model.train();
        using (NewDisposeScope()) optimizer.ZeroGrad(); // TorchSharp's zero_grad leaks a grad handle per parameter otherwise
        var micro = Enumerable.Range(0, _o.GradientAccumulation).Select(_ => loader.NextRows()).ToList();
        // Normalise by the step's total target count so accumulation equals one large batch.
        long targets = Math.Max(1, micro.Sum(rows => rows.Sum(r => (long)r.LossTokens)));
        double lossSum = 0;
        long tokens = 0;
        foreach (var rows in micro)
        {
            using var scope = NewDisposeScope();
            using var batch = Batch.From(rows, _model.Device, _eosId ?? 0);
            var logits = _method.Forward(_model, batch.InputIds, batch.AttentionMask);
            var loss = CausalLmLoss.Sum(logits, batch.Labels).DividedBy(targets);
            loss.backward();
            // Our kernels' autograd functions hold what they returned until the next custom backward; free it now.
            Kernels.ReturnedGradients.Release();
            lossSum += loss.item<float>();
            tokens += batch.Tokens;
        }
        double norm;
        using (NewDisposeScope()) // reading Parameter.grad makes a new tensor handle each time; the scope frees them
        {
            var ps = trainable.Where(p => p.grad is not null).ToList();
            norm = _o.MaxGradNorm > 0 ? nn.utils.clip_grad_norm_(ps, _o.MaxGradNorm) : GradNorm(ps);
        }
        if (double.IsFinite(lossSum) && double.IsFinite(norm))
        {
            optimizer.LearningRate = lr;
            optimizer.Step();
        }
        return (lossSum, norm, tokens);
    }

    static double GradNorm(IEnumerable<Parameter> ps)
    {
        using var scope = NewDisposeScope();
        double sq = 0;
        foreach (var p in ps) sq += p.grad!.to_type(ScalarType.Float64).square().sum().item<double>();
        return Math.Sqrt(sq);
    }

    EvalResult Evaluate(TrainingData data, int step, Stopwatch clock, RunFolder run)
    {
        _model.eval();
        var r = Evaluator.Run(_model, data.Eval, data.EvalPrompts, _eosId, _o.BatchSize, _o.EvalMaxPrompts, _method);
        var rec = new JsonObject { ["step"] = step, ["eval_loss"] = MetricsLog.Round(r.Loss), ["elapsed_s"] = MetricsLog.Round(clock.Elapsed.TotalSeconds, 4) };
        if (r.ExactMatch is double em) { rec["eval_accuracy"] = em; rec["eval_examples"] = r.Examples; }
        if (Decode is { } decode && r.Samples is { Count: > 0 } samples)
            rec["samples"] = new JsonArray(samples.Select(x => (JsonNode)new JsonObject
            {
                ["prompt"] = decode(x.Prompt), ["expected"] = decode(x.Expected), ["got"] = decode(x.Got), ["exact"] = x.Exact,
            }).ToArray());
        run.Record(rec);
        Log?.Invoke($"step {step}: eval loss {r.Loss:F4}" + (r.ExactMatch is double a ? $", exact match {a:P1} of {r.Examples}" : ""));
        return r;
    }

    /// <summary>run.json: the trainer options of this run.</summary>
    void WriteRunFile(RunFolder run) => run.WriteRunFile(JsonSerializer.Serialize(_o, TrainingJsonContext.Default.TrainerOptions));
}
