namespace PeftSharp.Memory;

public enum TuningMethod { Full, Lora, Dora, Qlora, Qdora, Adapter, PromptTuning }

public enum OptimizerKind { AdamW, AdamW8bit, PagedAdamW, PagedAdamW8bit, Sgd, SgdMomentum }

/// <summary>Eager: materialised s^2 scores. Fused: SDPA (with a padding mask transformers repeats k/v to every head
/// first). Flash: flash-attn / SDPA without a mask, which reads grouped k/v as they are.</summary>
public enum AttentionKind { Eager, Fused, Flash }

/// <summary>How the loss is computed. Full: HF's fp32 upcast of the whole [b, s, V] logits; Chunked: torchtune's
/// CEWithChunkedOutputLoss (8 chunks); Fused: the head and the loss in one kernel (Liger, Cut Cross Entropy, unsloth).</summary>
public enum LossKind { Full, Chunked, Fused }

/// <summary>Which figure the plan predicts. Allocated: <c>torch.cuda.max_memory_allocated</c> (tensors);
/// Reserved: <c>max_memory_reserved</c> (plus what the caching allocator holds beyond them); Device: what nvidia-smi
/// shows and what must fit on the card (plus the CUDA context and loaded kernels).</summary>
public enum MemoryView { Allocated, Reserved, Device }

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
        "fused" or "sdpa" => AttentionKind.Fused,
        "flash" or "flash-attn" or "flash_attention_2" => AttentionKind.Flash,
        _ => throw new PlanException("attention", $"unknown '{text}' (eager, sdpa, flash)"),
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

    public static LossKind Loss(string text) => text.Trim().ToLowerInvariant() switch
    {
        "full" => LossKind.Full,
        "chunked" => LossKind.Chunked,
        "fused" => LossKind.Fused,
        _ => throw new PlanException("loss", $"unknown '{text}' (full, chunked, fused)"),
    };

    public static MemoryView MemoryKind(string text) => text.Trim().ToLowerInvariant() switch
    {
        "allocated" => MemoryView.Allocated,
        "reserved" => MemoryView.Reserved,
        "device" or "nvidia-smi" => MemoryView.Device,
        _ => throw new PlanException("memory", $"unknown '{text}' (allocated, reserved, device)"),
    };

    /// <summary>The kind of a device as TorchSharp and the CLI name it: "cuda", "cuda:N" or "gpu" is CUDA, "cpu" the CPU.</summary>
    public static DeviceKind Device(string text) => text.Trim().ToLowerInvariant() switch
    {
        "cuda" or "gpu" => DeviceKind.Cuda,
        var d when d.StartsWith("cuda:", StringComparison.Ordinal) => DeviceKind.Cuda,
        "cpu" => DeviceKind.Cpu,
        _ => throw new PlanException("device", $"unknown '{text}' (cuda, cuda:N, cpu)"),
    };

    public static string Name(LossKind l) => l.ToString().ToLowerInvariant();

    public static string Name(MemoryView m) => m.ToString().ToLowerInvariant();

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
