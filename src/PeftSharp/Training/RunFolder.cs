using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Training.Optim;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// The output folder of one training run, the one way both loops (<see cref="Trainer"/> for SFT,
/// <see cref="Preference.PreferenceTrainer"/> for DPO/ORPO) prepare it, resume from it, checkpoint into it and record
/// metrics in it: run.json, metrics.jsonl, checkpoints/step-NNNNNN/ (the last KeepCheckpoints kept), final/.
/// Opening it removes what interrupted saves left; resuming validates trainer_state.json against the run and refuses a
/// checkpoint holding NaN; a fresh run seeds the global RNG; a checkpoint is the "last good" one only when finite.
/// </summary>
internal sealed class RunFolder
{
    public const string RunFile = "run.json";
    readonly TrainerOptions _o;
    readonly Action<JsonObject>? _onRecord;

    public string Dir => _o.OutDir;
    public MetricsLog Metrics { get; }
    /// <summary>The checkpoint this run resumes from (resolved from <see cref="TrainerOptions.ResumeFrom"/>), or null for a fresh run.</summary>
    public string? ResumeCheckpoint { get; }
    /// <summary>The latest checkpoint of this run whose parameters are all finite (named when training diverges), or null.</summary>
    public string? LastGood { get; private set; }

    RunFolder(TrainerOptions o, string? resume, Action<JsonObject>? onRecord)
    {
        _o = o; _onRecord = onRecord; ResumeCheckpoint = resume;
        Metrics = new MetricsLog(o.OutDir);
    }

    /// <summary>
    /// Starts a run in <see cref="TrainerOptions.OutDir"/>: removes leftovers of interrupted saves, resolves the checkpoint
    /// to resume from, and for a fresh run refuses a folder holding a run unless Overwrite (then clears that run).
    /// </summary>
    public static RunFolder Open(TrainerOptions o, Action<JsonObject>? onRecord)
    {
        RemoveInterruptedSaves(o.OutDir);
        string? resume = o.ResumeFrom is null ? null : Checkpoint.Resolve(o.ResumeFrom);
        if (resume is null && HoldsRun(o.OutDir))
        {
            if (!o.Overwrite)
                throw new InvalidOperationException($"{o.OutDir}: already holds a training run; pass overwrite to replace it or resume to continue it");
            foreach (var f in new[] { RunFile, MetricsLog.FileName }) File.Delete(Path.Combine(o.OutDir, f));
            foreach (var d in new[] { "checkpoints", "final" }) if (Directory.Exists(Path.Combine(o.OutDir, d))) Directory.Delete(Path.Combine(o.OutDir, d), true);
        }
        Directory.CreateDirectory(o.OutDir);
        return new RunFolder(o, resume, onRecord);
    }

    /// <summary>
    /// Removes the temp files and folders of saves a killed run left in its folder (.step-*.tmp checkpoints, .final.*.tmp,
    /// .metrics.jsonl.*.tmp; with full fine-tuning each is model-sized). Runs at the start of every run or resume of it.
    /// </summary>
    public static IReadOnlyList<string> RemoveInterruptedSaves(string outDir) =>
        [.. AtomicFile.RemoveLeftovers(outDir), .. AtomicFile.RemoveLeftovers(Path.Combine(outDir, "checkpoints"))];

    /// <summary>True when <paramref name="outDir"/> already holds (part of) a training run.</summary>
    public static bool HoldsRun(string outDir) =>
        File.Exists(Path.Combine(outDir, RunFile)) || File.Exists(Path.Combine(outDir, MetricsLog.FileName)) || Directory.Exists(Path.Combine(outDir, "checkpoints"));

    /// <summary>
    /// Fresh run: seeds the global RNG with the run's seed (dropout masks follow it, as HF's Trainer seeds) and returns null.
    /// Resume: restores parameters, optimiser and RNG from <see cref="ResumeCheckpoint"/>, checks its trainer_state.json
    /// against this run (<paramref name="totalSteps"/> steps over <paramref name="sequences"/> training rows), drops the
    /// metrics written after it, and returns its state. Nothing in the folder changes before the checks pass.
    /// </summary>
    public TrainerState? Resume(ITrainingMethod method, IOptimizer optimizer, int totalSteps, int sequences)
    {
        if (ResumeCheckpoint is not string resume)
        {
            manual_seed((long)_o.Seed);
            return null;
        }
        var state = Checkpoint.Load(resume, method, optimizer);   // refuses parameters holding NaN/Inf, naming the file
        if (state.TotalSteps != totalSteps)
            throw new InvalidOperationException($"{resume}: the checkpoint belongs to a run of {state.TotalSteps} steps, this one has {totalSteps}; use the same data and options to resume");
        state.Validate(Path.Combine(resume, Checkpoint.State), totalSteps, sequences, _o.BatchSize, _o.GradientAccumulation);
        LastGood = resume;
        Metrics.TruncateAfter(state.Step);
        return state;
    }

    /// <summary>
    /// Writes checkpoints/step-NNNNNN (atomically), keeps the last KeepCheckpoints, and returns the folder. It becomes
    /// <see cref="LastGood"/> only when every trained parameter is finite.
    /// </summary>
    public string Save(ITrainingMethod method, IOptimizer optimizer, DataPosition position, int step, int totalSteps, double lr)
    {
        Native.TensorAllocator.ReleaseIdle();   // the save's own buffers come on top of what the steps freed, not of a cache of it
        string dir = Checkpoint.Folder(_o.OutDir, step);
        Checkpoint.Save(dir, method, optimizer, new TrainerState(step, totalSteps, position.Epoch, position.Index, position.Seed, _o.Seed, lr, method.Description));
        var old = Directory.GetDirectories(Path.GetDirectoryName(dir)!, "step-*").Order(StringComparer.Ordinal).ToList();
        foreach (var d in old.Take(Math.Max(0, old.Count - Math.Max(1, _o.KeepCheckpoints)))) Directory.Delete(d, recursive: true);
        if (method.TrainableParameters.All(p => FiniteValues.All(p.P))) LastGood = dir;
        return dir;
    }

    /// <summary>The error that stops a run whose loss or gradient norm became non-finite (before the update), naming <see cref="LastGood"/>.</summary>
    public TrainingDivergedException Diverged(double loss, double gradNorm, int step, string advice) =>
        new($"{(double.IsFinite(loss) ? "gradient norm" : "loss")} became {(double.IsFinite(loss) ? gradNorm : loss)} at step {step}; " +
            $"training stopped before applying it. Last good checkpoint: {LastGood ?? "none"}. {advice}");

    /// <summary>Appends a record to metrics.jsonl and hands it to the caller's OnRecord.</summary>
    public void Record(JsonObject record)
    {
        Metrics.Append(record);
        _onRecord?.Invoke(record);
    }

    /// <summary>run.json: the options of this run (on resume called only once the checkpoint loaded, so a failed resume changes nothing).</summary>
    public void WriteRunFile(string json) => AtomicFile.WriteAllText(Path.Combine(_o.OutDir, RunFile), json);
}
