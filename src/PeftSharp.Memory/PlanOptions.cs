namespace PeftSharp.Memory;

public enum TuningMethod { Full, Lora, Dora, Qlora, Qdora, Adapter, PromptTuning }

public enum OptimizerKind { AdamW, AdamW8bit, PagedAdamW, PagedAdamW8bit, Sgd, SgdMomentum }

public enum AttentionKind { Eager, Fused }

/// <summary>Ordered by how much is sharded: the planner compares with >= (FSDP full shard = ZeRO-3).</summary>
public enum Sharding { None, Zero1, Zero2, Zero3, Fsdp }

/// <summary>Where the run executes; decides the default framework overhead.</summary>
public enum DeviceKind { Cuda, Cpu }

/// <summary>Text names used by the CLI and JSON, in both directions.</summary>
public static class PlanNames
{
    public static TuningMethod Method(string text) => text.Trim().ToLowerInvariant() switch
    {
        "full" => TuningMethod.Full,
        "lora" => TuningMethod.Lora,
        "dora" => TuningMethod.Dora,
        "qlora" => TuningMethod.Qlora,
        "qdora" => TuningMethod.Qdora,
        "adapter" or "adapters" or "houlsby" => TuningMethod.Adapter,
        "prompt" or "prompt-tuning" or "prompt_tuning" => TuningMethod.PromptTuning,
        _ => throw new PlanException("method", $"unknown '{text}' (full, lora, dora, qlora, qdora, adapter, prompt-tuning)"),
    };

    public static OptimizerKind Optimizer(string text) => text.Trim().ToLowerInvariant() switch
    {
        "adamw" or "adam" => OptimizerKind.AdamW,
        "adamw-8bit" or "adamw8bit" => OptimizerKind.AdamW8bit,
        "paged-adamw" => OptimizerKind.PagedAdamW,
        "paged-adamw-8bit" => OptimizerKind.PagedAdamW8bit,
        "sgd" => OptimizerKind.Sgd,
        "sgd-momentum" => OptimizerKind.SgdMomentum,
        _ => throw new PlanException("optimizer", $"unknown '{text}' (adamw, adamw-8bit, paged-adamw, paged-adamw-8bit, sgd, sgd-momentum)"),
    };

    public static AttentionKind Attention(string text) => text.Trim().ToLowerInvariant() switch
    {
        "eager" => AttentionKind.Eager,
        "fused" or "sdpa" or "flash" => AttentionKind.Fused,
        _ => throw new PlanException("attention", $"unknown '{text}' (eager, fused)"),
    };

    public static Sharding Sharding(string text) => text.Trim().ToLowerInvariant() switch
    {
        "none" or "ddp" => Memory.Sharding.None,
        "zero1" => Memory.Sharding.Zero1,
        "zero2" => Memory.Sharding.Zero2,
        "zero3" => Memory.Sharding.Zero3,
        "fsdp" => Memory.Sharding.Fsdp,
        _ => throw new PlanException("sharding", $"unknown '{text}' (none, zero1, zero2, zero3, fsdp)"),
    };

    public static string Name(TuningMethod m) => m == TuningMethod.PromptTuning ? "prompt-tuning" : m.ToString().ToLowerInvariant();

    public static string Name(OptimizerKind o) => o switch
    {
        OptimizerKind.AdamW => "adamw",
        OptimizerKind.AdamW8bit => "adamw-8bit",
        OptimizerKind.PagedAdamW => "paged-adamw",
        OptimizerKind.PagedAdamW8bit => "paged-adamw-8bit",
        OptimizerKind.Sgd => "sgd",
        _ => "sgd-momentum",
    };
}
