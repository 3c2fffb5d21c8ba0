namespace PeftSharp.Training;

/// <summary>Every knob of a training run. Defaults suit a small LoRA run.</summary>
public sealed record TrainerOptions
{
    public double LearningRate { get; init; } = 2e-4;
    /// <summary>constant, linear or cosine (after warm-up).</summary>
    public LrScheduleKind Schedule { get; init; } = LrScheduleKind.Cosine;
    public int WarmupSteps { get; init; }
    /// <summary>Epochs over the training data; ignored when <see cref="MaxSteps"/> is set.</summary>
    public int Epochs { get; init; } = 1;
    /// <summary>Optimiser steps to run; overrides <see cref="Epochs"/>.</summary>
    public int? MaxSteps { get; init; }
    public int BatchSize { get; init; } = 8;
    /// <summary>Micro-batches per optimiser step; the loss is normalised over all of their target tokens.</summary>
    public int GradientAccumulation { get; init; } = 1;
    public int MaxSeqLength { get; init; } = 512;
    /// <summary>Concatenate consecutive short examples into sequences of up to <see cref="MaxSeqLength"/>.</summary>
    public bool Packing { get; init; }
    /// <summary>Recompute layer activations in the backward pass (set by the caller on CausalLM.LayerRunner).</summary>
    public bool GradientCheckpointing { get; init; }
    /// <summary>Optimiser name (adamw, adamw-8bit, paged-adamw, paged-adamw-8bit), resolved by <see cref="Optim.OptimizerFactory"/> unless the Trainer is given another factory.</summary>
    public string Optimizer { get; init; } = "adamw";
    public double WeightDecay { get; init; }
    /// <summary>Clip the global gradient L2 norm to this; 0 disables.</summary>
    public double MaxGradNorm { get; init; } = 1.0;
    public ulong Seed { get; init; } = 42;
    /// <summary>Fraction of the training examples held out for evaluation when no eval file is given.</summary>
    public double EvalSplit { get; init; }
    public string? EvalFile { get; init; }
    /// <summary>Evaluate every N steps (0: only at the end, when there is eval data).</summary>
    public int EvalInterval { get; init; }
    /// <summary>At most this many prompts are decoded for exact-match accuracy per evaluation.</summary>
    public int EvalMaxPrompts { get; init; } = 64;
    /// <summary>Save a checkpoint every N steps (0: only at the end).</summary>
    public int SaveInterval { get; init; }
    /// <summary>Checkpoints kept on disk (oldest removed first).</summary>
    public int KeepCheckpoints { get; init; } = 2;
    /// <summary>A checkpoint folder, or a run folder (its latest checkpoint), to continue from.</summary>
    public string? ResumeFrom { get; init; }
    public string OutDir { get; init; } = "out";
    /// <summary>Replace a run already in <see cref="OutDir"/>.</summary>
    public bool Overwrite { get; init; }
    public string Device { get; init; } = "cpu";
    /// <summary>fp32, bf16 or fp16: the dtype of the frozen base and the activations (see <see cref="Training.ComputeDtype"/>);
    /// recorded in run.json. The caller loads the model in it (<see cref="Training.ComputeDtype.Of"/>: "auto" is decided
    /// there for a library caller; `train` passes the dtype it decided and printed).</summary>
    public string ComputeDtype { get; init; } = "fp32";
    /// <summary>Stop after this many steps of this process (simulates an interruption; the schedule still spans the whole run).</summary>
    public int? StopAfterSteps { get; init; }

    /// <summary>
    /// Optimiser steps of the whole run: <see cref="MaxSteps"/>, else <see cref="Epochs"/> x the steps one epoch of
    /// <paramref name="batchesPerEpoch"/> batches makes with gradient accumulation. At least one, or an error.
    /// </summary>
    public int TotalSteps(int batchesPerEpoch)
    {
        int total = MaxSteps ?? Epochs * ((batchesPerEpoch + GradientAccumulation - 1) / GradientAccumulation);
        if (total < 1) throw new ArgumentException($"the run has {total} steps; give at least one epoch or step");
        return total;
    }
}
