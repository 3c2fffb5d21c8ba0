using System.Text.Json.Serialization;
using PeftSharp.Memory;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>Every knob of a training run. Defaults suit a small LoRA run.</summary>
public sealed record TrainerOptions
{
    /// <summary>Peak learning rate of the schedule; default 2e-4.</summary>
    public double LearningRate { get; init; } = 2e-4;
    /// <summary>constant, linear or cosine (after warm-up).</summary>
    public LrScheduleKind Schedule { get; init; } = LrScheduleKind.Cosine;
    /// <summary>Optimizer steps of linear warm-up from 0 to <see cref="LearningRate"/>; default 0.</summary>
    public int WarmupSteps { get; init; }
    /// <summary>Epochs over the training data; ignored when <see cref="MaxSteps"/> is set.</summary>
    public int Epochs { get; init; } = 1;
    /// <summary>Optimiser steps to run; overrides <see cref="Epochs"/>.</summary>
    public int? MaxSteps { get; init; }
    /// <summary>Sequences per micro-batch; default 8.</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>Micro-batches per optimiser step; the loss is normalised over all of their target tokens.</summary>
    public int GradientAccumulation { get; init; } = 1;
    /// <summary>Tokens per sequence at most (longer examples are truncated); default 512.</summary>
    public int MaxSeqLength { get; init; } = 512;
    /// <summary>Concatenate consecutive short examples into sequences of up to <see cref="MaxSeqLength"/>.</summary>
    public bool Packing { get; init; }
    /// <summary>Recompute layer activations in the backward pass (set by the caller on CausalLM.LayerRunner).</summary>
    public bool GradientCheckpointing { get; init; }
    /// <summary>The optimiser (AdamW, its 8-bit and paged variants; the planner's SGD kinds are refused when the run starts),
    /// built by <see cref="Optim.OptimizerFactory"/> unless the Trainer is given another factory. run.json spells it as the
    /// CLI does (adamw, adamw-8bit, paged-adamw, paged-adamw-8bit).</summary>
    [JsonConverter(typeof(OptimizerJsonConverter))]
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.AdamW;
    /// <summary>AdamW's decoupled weight decay; default 0.</summary>
    public double WeightDecay { get; init; }
    /// <summary>Clip the global gradient L2 norm to this; 0 disables.</summary>
    public double MaxGradNorm { get; init; } = 1.0;
    /// <summary>Seed for initialisation, data order and dropout: the same seed gives the same run; default 42.</summary>
    public ulong Seed { get; init; } = 42;
    /// <summary>Fraction of the training examples held out for evaluation when no eval file is given.</summary>
    public double EvalSplit { get; init; }
    /// <summary>A JSONL file of held-out examples to evaluate on (instead of, or besides, <see cref="EvalSplit"/>); null = none.</summary>
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
    /// <summary>The run folder: checkpoints, metrics, the adapter and the report go here; default "out".</summary>
    public string OutDir { get; init; } = "out";
    /// <summary>Replace a run already in <see cref="OutDir"/>.</summary>
    public bool Overwrite { get; init; }
    /// <summary>
    /// Where the run trains, as TorchSharp names a device ("cpu", "cuda", "cuda:1"). A string, not an enum: the index is
    /// part of it; <see cref="DeviceKind"/> is the closed part the planner and the dtype choice need.
    /// </summary>
    public string Device { get; init; } = "cpu";
    /// <summary>CUDA or CPU: the kind of <see cref="Device"/>.</summary>
    [JsonIgnore]
    public DeviceKind DeviceKind => PlanNames.Device(Device);
    /// <summary>Float32, BFloat16 or Float16: the dtype of the frozen base and the activations (see <see cref="Training.ComputeDtype"/>;
    /// "auto" is resolved before a run starts). run.json spells it fp32, bf16 or fp16.</summary>
    [JsonConverter(typeof(ComputeDtypeJsonConverter))]
    public ScalarType ComputeDtype { get; init; } = ScalarType.Float32;
    /// <summary>CPU fp32 with a frozen base: pack the frozen weights for MKL during the steps (true), keep them plain (false),
    /// or null = auto, the memory plan's rule (Memory/CpuRuntime.PacksWeights: when the 2 x copies fit in an eighth of the
    /// machine's memory). Packing made steps 1.04-1.18x faster in the benches (more with fewer tokens per step), for the copies' memory.</summary>
    public bool? PackFrozenWeights { get; init; }
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
