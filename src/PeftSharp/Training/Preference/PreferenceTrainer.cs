using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Training.Optim;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training.Preference;

internal sealed record PreferenceTrainResult(int Steps, double LastLoss, PreferenceEvalResult? FirstEval, PreferenceEvalResult? LastEval, string? FinalDir, TimeSpan Elapsed);

/// <summary>
/// The training loop of DPO and ORPO, the twin of <see cref="Trainer"/> for pairs: the same options, optimisers, learning-rate
/// schedule, clipping, divergence stop, and the same run folder (<see cref="RunFolder"/>: checkpoints, validated exact resume,
/// metrics.jsonl, removal of interrupted saves), with the preference loss of
/// <see cref="PreferenceObjective"/>. Per step it logs loss, lr, grad_norm, TRL's reward metrics, pairs_per_s and memory;
/// per evaluation the same metrics prefixed eval_ plus eval_accuracy (exact match of the chosen answers).
/// Dropout stays off in both passes, as TRL's disable_dropout default, so policy and reference see the same network.
/// </summary>
internal sealed class PreferenceTrainer
{
    readonly CausalLM _model;
    readonly ITrainingMethod _method;
    readonly TrainerOptions _o;
    readonly PreferenceObjective _objective;
    readonly int? _eosId;

    public Action<string>? Log { get; init; }
    public Action<JsonObject>? OnRecord { get; init; }
    public CancellationToken Cancellation { get; init; }

    public PreferenceTrainer(CausalLM model, ITrainingMethod method, TrainerOptions options, PreferenceObjective objective, int? eosId)
    {
        _model = model; _method = method; _o = options; _objective = objective; _eosId = eosId;
        objective.Options.Validate();
        if (options.GradientAccumulation < 1) throw new ArgumentException($"gradient accumulation {options.GradientAccumulation} must be at least 1");
    }

    int PadId => _eosId ?? 0;

    public PreferenceTrainResult Train(PreferenceData data)
    {
        var clock = Stopwatch.StartNew();
        using var runLock = RunLock.Acquire(_o.OutDir);   // before RunFolder.Open clears leftovers: no other process's save in progress
        var run = RunFolder.Open(_o, OnRecord);
        var parameters = _method.TrainableParameters.ToList();
        if (parameters.Count == 0) throw new InvalidOperationException($"{_method.Description}: no trainable parameters");
        using var optimizer = Trainer.DefaultOptimizer(parameters, _o);
        var loader = new PairLoader(data.Train, _o.BatchSize, _o.Seed);
        int totalSteps = _o.TotalSteps(loader.BatchesPerEpoch);
        var schedule = new LrSchedule(_o.Schedule, _o.LearningRate, _o.WarmupSteps, totalSteps);
        Log?.Invoke($"{_objective.Options.Method.ToString().ToUpperInvariant()} with {_method.Description}; {data.TrainStats}; {totalSteps} steps of {Trainer.BatchText(_o, data.Train.Count, "pairs")} pairs");

        int step = 0;
        PreferenceEvalResult? first = null, last = null;
        if (run.Resume(_method, optimizer, totalSteps, data.Train.Count) is { } state)
        {
            loader.Position = state.DataPosition;
            step = state.Step;
            // The "before" figures, measured by the process that started the run (as Trainer does for SFT).
            first = last = PreferenceEvalResult.FromRecord(run.Metrics.EvalRecordAt(0));
            Log?.Invoke($"resumed from {run.ResumeCheckpoint} at step {step}");
        }
        WriteRunFile(run);

        (double[] Chosen, double[] Rejected)? precomputed = _objective.Options.PrecomputeReference && _objective.Options.Method == PreferenceMethod.Dpo ? Precompute(data.Train) : null;
        bool hasEval = data.Eval.Count > 0;
        if (hasEval && step == 0) first = last = Evaluate(data, 0, clock, run);

        // Chosen and rejected go through the model as one batch of 2 x BatchSize rows.
        using var packing = FrozenWeightPacking.Apply(_model, _o.PackFrozenWeights, FrozenWeightPacking.TypicalRows(data.Train.SelectMany(p => new[] { p.Chosen.Length, p.Rejected.Length }), 2 * _o.BatchSize, _o.MaxSeqLength));
        Log?.Invoke(packing.Description);
        Native.TensorAllocator.StartSteps();   // the buffer cache's cap: the steps' peak, not loading's or the reference's precompute
        double lastLoss = double.NaN;
        int ranThisProcess = 0;
        while (step < totalSteps && (_o.StopAfterSteps is not int stop || ranThisProcess < stop) && !Cancellation.IsCancellationRequested)
        {
            var stepClock = Stopwatch.StartNew();
            var stepMetrics = new PairMetrics();
            var (loss, norm, pairs) = Step(loader, optimizer, parameters.Select(p => p.P).ToList(), schedule.At(step), stepMetrics, precomputed);
            if (!double.IsFinite(loss) || !double.IsFinite(norm))
                throw run.Diverged(loss, norm, step + 1, "Try a lower learning rate or --beta");
            step++; ranThisProcess++;
            if (ranThisProcess == 1) Native.TensorAllocator.StartSteps();   // again: the optimiser state and gradients now exist
            lastLoss = loss;
            var (rss, peak) = ProcessMemory.Read();
            var rec = new JsonObject { ["step"] = step, ["loss"] = MetricsLog.Round(loss), ["lr"] = schedule.At(step - 1), ["grad_norm"] = MetricsLog.Round(norm) };
            stepMetrics.WriteTo(rec);
            rec["pairs_per_s"] = MetricsLog.Round(pairs / Math.Max(1e-9, stepClock.Elapsed.TotalSeconds), 4);
            rec["elapsed_s"] = MetricsLog.Round(clock.Elapsed.TotalSeconds, 4);
            rec["rss_mb"] = MetricsLog.Round(rss / 1048576.0, 4);
            rec["peak_rss_mb"] = MetricsLog.Round(peak / 1048576.0, 4);
            run.Record(rec);
            if (hasEval && _o.EvalInterval > 0 && step % _o.EvalInterval == 0 && step < totalSteps) last = Evaluate(data, step, clock, run);
            if (_o.SaveInterval > 0 && step % _o.SaveInterval == 0 && step < totalSteps) run.Save(_method, optimizer, loader.Position, step, totalSteps, schedule.At(step - 1));
        }
        Native.TensorAllocator.ReleaseIdle();   // the steps are over: evaluation and saves start from the live tensors
        if (step < totalSteps)
        {
            if (step > 0 && ranThisProcess > 0)
            {
                string ckpt = run.Save(_method, optimizer, loader.Position, step, totalSteps, schedule.At(step - 1));
                Log?.Invoke($"interrupted at step {step}: saved {ckpt}; continue with --resume {_o.OutDir}");
            }
            return new PreferenceTrainResult(step, lastLoss, first, last, null, clock.Elapsed);
        }
        if (hasEval) last = Evaluate(data, step, clock, run);
        run.Save(_method, optimizer, loader.Position, step, totalSteps, schedule.At(step - 1));
        string finalDir = Path.Combine(_o.OutDir, "final");
        _method.Save(finalDir);
        Log?.Invoke($"saved {finalDir} after {step} steps in {clock.Elapsed.TotalSeconds:F1}s");
        return new PreferenceTrainResult(step, lastLoss, first, last, finalDir, clock.Elapsed);
    }

    (double Loss, double Norm, int Pairs) Step(PairLoader loader, IOptimizer optimizer, IReadOnlyList<Parameter> trainable, double lr,
        PairMetrics metrics, (double[] Chosen, double[] Rejected)? precomputed)
    {
        _model.eval();   // dropout off (TRL's disable_dropout): policy and reference differ only by the adapter
        using (NewDisposeScope()) optimizer.ZeroGrad();
        var micro = Enumerable.Range(0, _o.GradientAccumulation).Select(_ => loader.NextIndices()).ToList();
        long stepPairs = micro.Sum(m => (long)m.Count);
        long chosenTokens = micro.Sum(m => m.Sum(i => (long)loader.Pairs[i].Chosen.LossTokens));
        double lossSum = 0;
        foreach (var indices in micro)
        {
            using var scope = NewDisposeScope();
            var pairs = indices.Select(i => loader.Pairs[i]).ToList();
            (Tensor, Tensor)? pre = precomputed is { } p
                ? (tensor(indices.Select(i => p.Chosen[i]).ToArray(), device: _model.Device), tensor(indices.Select(i => p.Rejected[i]).ToArray(), device: _model.Device))
                : null;
            var loss = _objective.Loss(_model, _method, pairs, PadId, stepPairs, chosenTokens, metrics, pre);
            loss.backward();
            // Our kernels' autograd functions hold what they returned until the next custom backward; free it now.
            Kernels.ReturnedGradients.Release();
            lossSum += loss.item<float>();
        }
        double norm;
        using (NewDisposeScope())
        {
            var ps = trainable.Where(p => p.grad is not null).ToList();
            norm = _o.MaxGradNorm > 0 ? nn.utils.clip_grad_norm_(ps, _o.MaxGradNorm) : GradNorm(ps);
        }
        if (double.IsFinite(lossSum) && double.IsFinite(norm))
        {
            optimizer.LearningRate = lr;
            optimizer.Step();
        }
        return (lossSum, norm, (int)stepPairs);
    }

    static double GradNorm(IEnumerable<Parameter> ps)
    {
        using var scope = NewDisposeScope();
        double sq = 0;
        foreach (var p in ps) sq += p.grad!.to_type(ScalarType.Float64).square().sum().item<double>();
        return Math.Sqrt(sq);
    }

    /// <summary>--precompute-ref: the reference log-probs of every training pair, once (TRL's precompute_ref_log_probs).</summary>
    (double[] Chosen, double[] Rejected) Precompute(IReadOnlyList<TokenizedPair> pairs)
    {
        var clock = Stopwatch.StartNew();
        _model.eval();
        var chosen = new double[pairs.Count];
        var rejected = new double[pairs.Count];
        for (int i = 0; i < pairs.Count; i += _o.BatchSize)
        {
            using var scope = NewDisposeScope();
            var batch = pairs.Skip(i).Take(_o.BatchSize).ToList();
            var (c, r) = _objective.ReferenceLogps(batch, _model.Device, PadId);
            c.to_type(ScalarType.Float64).cpu().data<double>().ToArray().CopyTo(chosen, i);
            r.to_type(ScalarType.Float64).cpu().data<double>().ToArray().CopyTo(rejected, i);
        }
        Log?.Invoke($"reference log-probs of {pairs.Count} pairs precomputed in {clock.Elapsed.TotalSeconds:F1}s");
        return (chosen, rejected);
    }

    PreferenceEvalResult Evaluate(PreferenceData data, int step, Stopwatch clock, RunFolder run)
    {
        _model.eval();
        var r = PreferenceEvaluator.Run(_model, _method, _objective, data.Eval, data.EvalPrompts, _eosId, _o.BatchSize, _o.EvalMaxPrompts);
        var rec = new JsonObject { ["step"] = step, ["eval_loss"] = MetricsLog.Round(r.Loss) };
        r.Metrics.WriteTo(rec, "eval_");
        if (r.ExactMatch is double em) { rec["eval_accuracy"] = em; rec["eval_examples"] = r.ExactMatchExamples; }
        rec["elapsed_s"] = MetricsLog.Round(clock.Elapsed.TotalSeconds, 4);
        run.Record(rec);
        Log?.Invoke($"step {step}: eval loss {r.Loss:F4}, reward accuracy {r.RewardAccuracy:P1}, margin {r.Metrics.RewardMargin:F4}" +
                    (r.ExactMatch is double a ? $", exact match {a:P1} of {r.ExactMatchExamples}" : ""));
        return r;
    }

    /// <summary>run.json: the trainer and preference options of this run.</summary>
    void WriteRunFile(RunFolder run)
    {
        var json = new JsonObject
        {
            ["trainer"] = JsonSerializer.SerializeToNode(_o, TrainingJsonContext.Default.TrainerOptions),
            ["preference"] = JsonSerializer.SerializeToNode(_objective.Options, TrainingJsonContext.Default.PreferenceOptions),
        };
        run.WriteRunFile(json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}

/// <summary>
/// Seeded, resumable batches of pair indices: <see cref="BatchLoader"/>'s order and position over the pairs (it shuffles
/// the chosen sequences; each maps back to its pair by reference).
/// </summary>
sealed class PairLoader
{
    readonly BatchLoader _inner;
    readonly Dictionary<TokenSequence, int> _index = new(ReferenceEqualityComparer.Instance);
    public IReadOnlyList<TokenizedPair> Pairs { get; }
    public int BatchesPerEpoch => _inner.BatchesPerEpoch;

    public PairLoader(IReadOnlyList<TokenizedPair> pairs, int batchSize, ulong seed)
    {
        Pairs = pairs;
        for (int i = 0; i < pairs.Count; i++) _index[pairs[i].Chosen] = i;
        _inner = new BatchLoader(pairs.Select(p => p.Chosen).ToList(), batchSize, seed);
    }

    public DataPosition Position { get => _inner.Position; set => _inner.Position = value; }

    public IReadOnlyList<int> NextIndices() => _inner.NextRows().Select(r => _index[r]).ToList();
}
