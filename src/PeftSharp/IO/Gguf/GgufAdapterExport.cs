using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.IO.Gguf;

/// <summary>
/// A LoRA adapter as a llama.cpp adapter GGUF (convert_lora_to_gguf.py's layout: general.type=adapter,
/// adapter.type=lora, adapter.lora.alpha, blk.N.&lt;tensor&gt;.weight.lora_a [r, in] and .lora_b [out, r]), exact for
/// every PEFT scaling: each module's own scale (alpha/r, rsLoRA alpha/sqrt(r), alpha_pattern, rank_pattern) is folded
/// into lora_b, and adapter.lora.alpha is chosen so llama.cpp's runtime factor (alpha/rank, rank read from lora_b;
/// alpha 0 meaning none) is 1: alpha = r when every module has rank r, else 0. q/k lora_b rows get the same Llama
/// permutation as the base weights; lora_a is not permuted. llama.cpp's Python converter writes one lora_alpha and
/// ignores use_rslora, so rsLoRA and patterns come out wrong there.
/// </summary>
internal static class GgufAdapterExport
{
    /// <summary>
    /// Writes one adapter's LoRA layers (<paramref name="layers"/>, any order) for the base <paramref name="c"/>; the
    /// adapter's own checks (DoRA, trained biases) are its tuner's, before this (Tuners/Lora/LoraGgufExport.cs).
    /// </summary>
    public static void Write(ModelConfig c, IEnumerable<GgufLoraLayer> layers, string modelDir, string adapterDir, string outPath, string? baseFingerprintJson = null)
    {
        string arch = GgufModelExport.ArchitectureOf(c, modelDir);
        string cfgPath = Path.Combine(adapterDir, AdapterFolderFiles.ConfigFile);
        var sorted = layers.OrderBy(l => l.Module, StringComparer.Ordinal).ToList();
        var ranks = sorted.Select(l => (int)l.A.shape[0]).Distinct().ToList();
        float alpha = ranks.Count == 1 ? ranks[0] : 0f;
        var meta = new List<KeyValuePair<string, GgufValue>>
        {
            new("general.architecture", GgufValue.Str(arch)),
            new("general.type", GgufValue.Str("adapter")),
            new("general.name", GgufValue.Str(Path.GetFileName(Path.GetFullPath(adapterDir).TrimEnd('/')))),
            new("adapter.type", GgufValue.Str("lora")),
            new("adapter.lora.alpha", GgufValue.F32(alpha)),
        };
        if (baseFingerprintJson is not null) meta.Add(new("peftsharp.base_fingerprint", GgufValue.Str(baseFingerprintJson)));

        var tensors = new List<GgufTensor>();
        foreach (var l in sorted)
        {
            string module = l.Module;
            string name = GgufModelExport.GgufName(module + ".weight", arch)
                ?? throw new InvalidDataException($"{cfgPath}: module '{module}' has no llama.cpp tensor to adapt");
            int? permuteHeads = arch == "llama" ? module.EndsWith(".q_proj", StringComparison.Ordinal) ? c.NumHeads
                : module.EndsWith(".k_proj", StringComparison.Ordinal) ? c.NumKvHeads : null : null;
            tensors.Add(new GgufTensor(name + ".lora_a", l.A.shape, GgmlType.F32, s => WriteF32(s, l.A, 1.0, null)));
            tensors.Add(new GgufTensor(name + ".lora_b", l.B.shape, GgmlType.F32, s => WriteF32(s, l.B, l.Scaling, permuteHeads)));
        }
        GgufWriter.Write(outPath, meta, tensors);
    }

    static void WriteF32(Stream s, Tensor t, double scale, int? permuteHeads)
    {
        using var scope = NewDisposeScope();
        var x = t.detach().to(ScalarType.Float64, CPU).Times(scale).to(ScalarType.Float32);
        if (permuteHeads is int heads) x = GgufModelExport.PermuteRows(x, heads);
        s.Write(GgmlQuants.Encode(GgmlType.F32, x.contiguous().data<float>().ToArray()));
    }
}

/// <summary>One adapted module as the llama.cpp adapter GGUF stores it: A [r, in], B [out, r] and the scale folded into B.</summary>
/// <param name="Module">The module's path in the model (model.layers.0.self_attn.q_proj).</param>
/// <param name="A">LoRA's A, [r, in].</param>
/// <param name="B">LoRA's B, [out, r].</param>
/// <param name="Scaling">The module's scale (alpha/r, or as rsLoRA and the patterns give it), folded into B.</param>
internal sealed record GgufLoraLayer(string Module, Tensor A, Tensor B, double Scaling);
