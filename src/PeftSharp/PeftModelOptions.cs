using PeftSharp.Hub;
using PeftSharp.Quantization;
using static TorchSharp.torch;

namespace PeftSharp;

/// <summary>How <see cref="PeftModel.FromPretrained"/> loads the base and its adapter.</summary>
public sealed record PeftModelOptions
{
    /// <summary>The base weights' dtype (adapters keep the dtype they were saved in).</summary>
    public ScalarType Dtype { get; init; } = ScalarType.Float32;
    /// <summary>Where the model runs; null = CPU.</summary>
    public Device? Device { get; init; }
    /// <summary>Quantise the base's linear weights to 4 bits while loading (QLoRA; bitsandbytes' load_in_4bit).</summary>
    public Nf4Options? LoadIn4Bit { get; init; }
    /// <summary>Load an adapter even when the base fingerprint it records differs from this base (then a warning).</summary>
    public bool AllowBaseMismatch { get; init; }
    /// <summary>Load the adapter's parameters with requires_grad (PEFT's is_trainable), to continue training it.</summary>
    public bool IsTrainable { get; init; }
    /// <summary>A chat template file (.jinja or a tokenizer_config.json) used instead of the model's own.</summary>
    public string? ChatTemplateFile { get; init; }
    /// <summary>Hub settings for repo ids (default: the environment, as huggingface_hub reads it).</summary>
    public HubOptions? Hub { get; init; }
}
