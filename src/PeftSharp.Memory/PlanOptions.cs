namespace PeftSharp.Memory;

/// <summary>What trains (PEFT's <c>peft_type</c>, or the whole model).</summary>
public enum TuningMethod
{
    /// <summary>Full fine-tuning: every base weight trains.</summary>
    Full,
    /// <summary>LoRA: rank-r A and B matrices beside each target module; the base is frozen.</summary>
    Lora,
    /// <summary>DoRA: LoRA plus a magnitude vector per target module.</summary>
    Dora,
    /// <summary>QLoRA: LoRA over a base whose decoder-block Linears are NF4 with double quantisation.</summary>
    Qlora,
    /// <summary>QDoRA: DoRA over the NF4 base of QLoRA.</summary>
    Qdora,
    /// <summary>Houlsby bottleneck adapters, two per decoder block.</summary>
    Adapter,
    /// <summary>Prompt tuning: trained virtual-token embeddings prepended to every sequence.</summary>
    PromptTuning,
}

/// <summary>The optimiser, which decides the state kept per trainable parameter.</summary>
public enum OptimizerKind
{
    /// <summary>torch.optim AdamW (foreach): two fp32 moments, 8 bytes per parameter, plus a parameter-sized temporary in its step.</summary>
    AdamW,
    /// <summary>bitsandbytes 8-bit AdamW: 2 bytes per parameter plus per-block scales; tensors under 4096 elements stay 32-bit.</summary>
    AdamW8bit,
    /// <summary>bitsandbytes paged AdamW: AdamW's moments in unified memory (<see cref="MemoryPlan.PageableBytes"/>).</summary>
    PagedAdamW,
    /// <summary>bitsandbytes paged 8-bit AdamW.</summary>
    PagedAdamW8bit,
    /// <summary>Plain SGD: no state.</summary>
    Sgd,
    /// <summary>SGD with momentum: one fp32 buffer, 4 bytes per parameter.</summary>
    SgdMomentum,
}

/// <summary>Eager: materialised s^2 scores. Fused: SDPA (with a padding mask transformers repeats k/v to every head
/// first). Flash: flash-attn / SDPA without a mask, which reads grouped k/v as they are.</summary>
public enum AttentionKind
{
    /// <summary>Eager attention: the s x s scores, their fp32 softmax, its 16-bit copy and the dropout mask are kept.</summary>
    Eager,
    /// <summary>PyTorch SDPA with a padding mask (transformers' default): no s x s tensor; k and v repeated to every head.</summary>
    Fused,
    /// <summary>flash-attn, or SDPA without a mask: no s x s tensor; grouped k and v kept as they are.</summary>
    Flash,
}

/// <summary>How the loss is computed. Full: HF's fp32 upcast of the whole [b, s, V] logits; Chunked: torchtune's
/// CEWithChunkedOutputLoss (8 chunks); Fused: the head and the loss in one kernel (Liger, Cut Cross Entropy, unsloth).</summary>
public enum LossKind
{
    /// <summary>transformers' <c>ForCausalLMLoss</c>: the logits plus three fp32 copies of b x s x vocab.</summary>
    Full,
    /// <summary>torchtune's <c>CEWithChunkedOutputLoss</c>: the logits, their fp32 log-softmax, one chunk's gradients.</summary>
    Chunked,
    /// <summary>Liger / Cut Cross Entropy / unsloth: no b x s x vocab tensor at all.</summary>
    Fused,
}

/// <summary>Which figure the plan predicts. Allocated: <c>torch.cuda.max_memory_allocated</c> (tensors);
/// Reserved: <c>max_memory_reserved</c> (plus what the caching allocator holds beyond them); Device: what nvidia-smi
/// shows and what must fit on the card (plus the CUDA context and loaded kernels).</summary>
public enum MemoryView
{
    /// <summary><c>torch.cuda.max_memory_allocated</c>: the tensors and the cuBLAS workspace.</summary>
    Allocated,
    /// <summary><c>torch.cuda.max_memory_reserved</c>: allocated plus the caching allocator's slack (4%).</summary>
    Reserved,
    /// <summary>What nvidia-smi shows and what must fit on the card: reserved plus the CUDA context and kernels (0.8 GB).</summary>
    Device,
}

/// <summary>Ordered by how much is sharded: the planner compares with >= (FSDP full shard = ZeRO-3).</summary>
public enum Sharding
{
    /// <summary>Plain data parallelism (DDP): every GPU holds everything.</summary>
    None,
    /// <summary>ZeRO-1: optimiser state split across the GPUs.</summary>
    Zero1,
    /// <summary>ZeRO-2: optimiser state and gradients split.</summary>
    Zero2,
    /// <summary>ZeRO-3: state, gradients and weights split; one block's weights gathered at a time.</summary>
    Zero3,
    /// <summary>FSDP full shard: as ZeRO-3.</summary>
    Fsdp,
}

/// <summary>Where the run executes; decides the default framework overhead.</summary>
public enum DeviceKind
{
    /// <summary>A CUDA GPU running PyTorch + transformers + PEFT.</summary>
    Cuda,
    /// <summary>The CPU, running this project's trainer (`peft train`): resident memory of the process.</summary>
    Cpu,
}

/// <summary>Text names used by the CLI and JSON, in both directions.</summary>
internal static class PlanNames
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
