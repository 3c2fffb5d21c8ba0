using PeftSharp.Models;
using PeftSharp.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Generation.Fast;

/// <summary>
/// Which models the C# batch-1 decode step covers (<see cref="FastDecoder"/>); everything else decodes through the
/// libtorch forward. Covered: llama / mistral / qwen2 (q/k/v biases) / qwen3 (q/k norms) / phi3 without longrope
/// (fused projections), fp32 dense weights on the CPU, no adapter active unless merged into the base.
/// </summary>
internal static class FastDecodeEligibility
{
    /// <summary>PEFTSHARP_DECODE=torch forces the libtorch decode (for comparisons); anything else is automatic.</summary>
    public const string EnvironmentVariable = "PEFTSHARP_DECODE";

    public static bool ForcedOff => string.Equals(Environment.GetEnvironmentVariable(EnvironmentVariable), "torch", StringComparison.OrdinalIgnoreCase);

    /// <summary>Why <paramref name="model"/> cannot decode a sequence of up to <paramref name="maxLength"/> tokens in C#; null when it can.</summary>
    public static string? WhyNot(CausalLM model, long maxLength)
    {
        var c = model.Config;
        if (model.Device.type != DeviceType.CPU) return $"the model is on {model.Device.type} (the C# decode is CPU-only)";
        if (model.Dtype != ScalarType.Float32) return $"the weights are {model.Dtype} (the C# decode reads fp32)";
        if (model.QuantizationScheme != "none" || model.Linears().Any(l => l.Quantized is not null)) return "the base is quantised";
        if (c.GemmaBlock || c.HiddenAct != "silu" || c.AttnLogitSoftcapping is not null || c.FinalLogitSoftcapping is not null)
            return $"model family {c.ModelType} (gemma-style norms, GeGLU or soft-capping)";
        if (c.RopeScaling is { Type: "longrope" }) return "longrope scaling (the cache is recomputed at its switch)";
        if (Enumerable.Range(0, c.NumLayers).Any(l => c.WindowOf(l) is { } w && maxLength >= w - 1))
            return "a sliding window shorter than the sequence";
        if (model.State.RowAdapters is not null) return "a mixed-adapter batch";
        if (!model.State.Disabled && model.Linears().FirstOrDefault(Unmerged) is { } l) return $"an unmerged adapter on {l.ModulePath}";
        if (model.Layers.Any(l => l.AfterAttention is not null || l.AfterMlp is not null)) return "bottleneck (Houlsby) adapters";
        if (model.LayerRunner != CausalLM.DefaultLayerRunner && !GradientCheckpointing.IsEnabled(model)) return "a custom layer runner";
        var dense = model.Linears().Select(l => (Tensor?)l.weight).Concat([model.model.embed_tokens.weight, model.model.norm.weight]);
        if (dense.Any(t => t is null || !t.is_contiguous())) return "a weight that is not one contiguous block";
        return null;

        bool Unmerged(TunableLinear l) => model.State.Active.Any(a => a.Name != l.MergedAdapter && l.Adapters.ContainsKey(a.Name));
    }
}
