using System.Globalization;
using System.Text.RegularExpressions;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.IO.Gguf;

/// <summary>
/// Writes a loaded model (adapters already merged into its weights) as a GGUF file llama.cpp runs, following
/// convert_hf_to_gguf.py (LlamaModel for llama and mistral, Qwen2Model, Qwen3Model, Phi3MiniModel, Gemma2Model):
/// architecture keys, tensor names, the Q/K row permutation of the Llama family, tied embeddings (no output.weight),
/// llama3 rope scaling as a rope_freqs tensor, general.* and tokenizer metadata (<see cref="GgufVocab"/>). Tensors
/// are converted one at a time while the file streams out.
/// </summary>
internal static partial class GgufModelExport
{
    /// <summary>config.json model_type -> llama.cpp architecture.</summary>
    public static readonly IReadOnlyDictionary<string, string> Architectures = new Dictionary<string, string>
    {
        ["llama"] = "llama",
        ["mistral"] = "llama",   // convert_hf_to_gguf.py registers MistralForCausalLM under LlamaModel
        ["qwen2"] = "qwen2",
        ["qwen3"] = "qwen3",
        ["phi3"] = "phi3",
        ["gemma2"] = "gemma2",
    };

    public const string SupportedTypes = "f32, f16, bf16, q8_0, q4_0, q4_K_M";

    public static GgufFileType ParseType(string type) => type.ToLowerInvariant() switch
    {
        "f32" => GgufFileType.AllF32,
        "f16" => GgufFileType.MostlyF16,
        "bf16" => GgufFileType.MostlyBF16,
        "q8_0" => GgufFileType.MostlyQ8_0,
        "q4_0" => GgufFileType.MostlyQ4_0,
        "q4_k_m" => GgufFileType.MostlyQ4_K_M,
        _ => throw new ArgumentException($"--type '{type}' is not supported (supported: {SupportedTypes})"),
    };

    /// <summary>Refuses a model this exporter cannot write, naming its config.json and the cause, before any work.</summary>
    public static string ArchitectureOf(ModelConfig c, string modelDir)
    {
        string where = Path.Combine(modelDir, "config.json");
        if (!Architectures.TryGetValue(c.ModelType, out var arch))
            throw new InvalidDataException($"{where}: model_type '{c.ModelType}' cannot be exported to GGUF yet (supported: {string.Join(", ", Architectures.Keys)})");
        if (c.RopeScaling is { } rs && rs.Type != "llama3")
            throw new InvalidDataException($"{where}: rope_scaling type '{rs.Type}' cannot be exported to GGUF yet (supported: llama3)");
        // llama.cpp has no sliding window for qwen2/qwen3 (and the converter writes none): refused. For llama
        // (Mistral) and phi3 llama.cpp attends to everything too, exactly as convert_hf_to_gguf.py leaves it; Write
        // notes the context up to which the outputs are equal.
        if (c.SlidingWindow is not null && arch is "qwen2" or "qwen3")
            throw new InvalidDataException($"{where}: sliding-window attention (use_sliding_window) cannot be exported to GGUF: llama.cpp's {arch} has none");
        // llama.cpp's gemma2 scales attention by 1/sqrt(head_dim) (hidden/heads for the 46-layer 27B), ignoring query_pre_attn_scalar.
        if (arch == "gemma2")
        {
            double theirs = 1.0 / Math.Sqrt(c.NumLayers == 46 ? c.HiddenSize / c.NumHeads : c.HeadDim);
            if (Math.Abs(c.AttentionScale - theirs) > 1e-9 * theirs)
                throw new InvalidDataException($"{where}: query_pre_attn_scalar gives attention scale {c.AttentionScale:G6}, but llama.cpp's gemma2 uses {theirs:G6} (1/sqrt(head_dim)); GGUF export refused");
        }
        return arch;
    }

    /// <summary>
    /// <paramref name="model"/> (adapters merged) as a GGUF at <paramref name="outPath"/>, its tokenizer from
    /// <paramref name="modelDir"/> and <paramref name="chatTemplate"/> as its chat template (the base's own unless an
    /// adapter merged into it was trained with another: <see cref="Chat.MergedChatTemplate.ForExport"/>).
    /// </summary>
    public static void Write(CausalLM model, string modelDir, string outPath, GgufFileType fileType, Chat.ChatTemplate? chatTemplate, Action<string>? note = null)
    {
        var c = model.Config;
        string arch = ArchitectureOf(c, modelDir);
        if (model.Linears().Any(l => l.Quantized is not null))
            throw new InvalidOperationException("cannot export a quantised base to GGUF; load the base dense");
        var meta = new List<KeyValuePair<string, GgufValue>>
        {
            new("general.architecture", GgufValue.Str(arch)),
            new("general.type", GgufValue.Str("model")),
            new("general.name", GgufValue.Str(Path.GetFileName(Path.GetFullPath(modelDir).TrimEnd('/')))),
            new("general.file_type", GgufValue.U32((uint)fileType)),
            new("general.quantization_version", GgufValue.U32(2)), // GGML_QNT_VERSION
            new($"{arch}.vocab_size", GgufValue.U32((uint)c.VocabSize)),
            new($"{arch}.context_length", GgufValue.U32((uint)c.MaxPositionEmbeddings)),
            new($"{arch}.embedding_length", GgufValue.U32((uint)c.HiddenSize)),
            new($"{arch}.block_count", GgufValue.U32((uint)c.NumLayers)),
            new($"{arch}.feed_forward_length", GgufValue.U32((uint)c.IntermediateSize)),
            new($"{arch}.attention.head_count", GgufValue.U32((uint)c.NumHeads)),
            new($"{arch}.attention.head_count_kv", GgufValue.U32((uint)c.NumKvHeads)),
            new($"{arch}.attention.layer_norm_rms_epsilon", GgufValue.F32((float)c.RmsNormEps)),
            new($"{arch}.rope.freq_base", GgufValue.F32((float)c.RopeTheta)),
            new($"{arch}.rope.dimension_count", GgufValue.U32((uint)(c.RotaryDim > 0 ? c.RotaryDim : c.HeadDim))),
        };
        if (arch == "gemma2")
        {
            if (c.AttnLogitSoftcapping is double ac) meta.Add(new("gemma2.attn_logit_softcapping", GgufValue.F32((float)ac)));
            if (c.FinalLogitSoftcapping is double fc) meta.Add(new("gemma2.final_logit_softcapping", GgufValue.F32((float)fc)));
            // llama.cpp's gemma2 slides on even layers (set_swa_pattern(2)), as HF's Gemma 2 does.
            if (c.SlidingWindow is int w) meta.Add(new("gemma2.attention.sliding_window", GgufValue.U32((uint)w)));
        }
        else if (c.SlidingWindow is int w && w < c.MaxPositionEmbeddings)
            note?.Invoke($"sliding_window {w}: llama.cpp's {arch} attends to the whole context (as convert_hf_to_gguf.py leaves it), so outputs are equal up to {w} tokens");
        if (c.HeadDim * c.NumHeads != c.HiddenSize)
        {
            meta.Add(new($"{arch}.attention.key_length", GgufValue.U32((uint)c.HeadDim)));
            meta.Add(new($"{arch}.attention.value_length", GgufValue.U32((uint)c.HeadDim)));
        }
        meta.AddRange(GgufVocab.Metadata(modelDir, c, chatTemplate));

        var tensors = new List<GgufTensor>();
        var byName = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var ordered = byName.Keys.OrderBy(Order).ToList();
        bool hasOutput = byName.ContainsKey("lm_head.weight");
        foreach (var hfName in ordered)
        {
            string name = GgufName(hfName, arch) ?? throw new InvalidOperationException($"parameter '{hfName}' has no GGUF name (unmerged adapter weights?)");
            var p = byName[hfName];
            long[] shape = p.shape;
            // Llama-family checkpoints hold q/k rows in HF's rotate-half order; llama.cpp expects them interleaved.
            int? permuteHeads = arch == "llama" ? hfName.Contains(".q_proj.") ? c.NumHeads : hfName.Contains(".k_proj.") ? c.NumKvHeads : null : null;
            var type = TypeFor(name, shape, fileType, Order(hfName) is (1, int layer, _) ? layer : -1, c.NumLayers, hasOutput, note);
            // Gemma stores norms as w in x * (1 + w); llama.cpp multiplies by the stored value (Gemma2Model adds 1).
            bool plusOne = arch == "gemma2" && hfName.EndsWith("norm.weight", StringComparison.Ordinal);
            tensors.Add(new GgufTensor(name, shape, type, s => WriteParameter(s, p, permuteHeads, plusOne, type)));
        }
        if (c.RopeScaling is { Type: "llama3" } scaling)
        {
            var factors = Llama3RopeFactors(c.RopeTheta, c.HeadDim, scaling);
            tensors.Insert(1, new GgufTensor("rope_freqs.weight", [factors.Length], GgmlType.F32, s => s.Write(GgmlQuants.Encode(GgmlType.F32, factors))));
        }
        GgufWriter.Write(outPath, meta, tensors);
    }

    /// <summary>convert_hf_to_gguf.py's tensor order: embeddings, the blocks in order, the final norm, the output head.</summary>
    static (int, int, string) Order(string hfName)
    {
        var m = LayerName().Match(hfName);
        if (m.Success) return (1, int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), hfName);
        return hfName.StartsWith("model.embed_tokens", StringComparison.Ordinal) ? (0, 0, hfName)
            : hfName.StartsWith("model.norm", StringComparison.Ordinal) ? (2, 0, hfName) : (3, 0, hfName);
    }

    [GeneratedRegex(@"^model\.layers\.(\d+)\.(.+)$")]
    private static partial Regex LayerName();

    static readonly Dictionary<string, string> LayerTensors = new()
    {
        ["input_layernorm"] = "attn_norm", ["self_attn.q_proj"] = "attn_q", ["self_attn.k_proj"] = "attn_k",
        ["self_attn.v_proj"] = "attn_v", ["self_attn.o_proj"] = "attn_output", ["post_attention_layernorm"] = "ffn_norm",
        ["mlp.gate_proj"] = "ffn_gate", ["mlp.up_proj"] = "ffn_up", ["mlp.down_proj"] = "ffn_down",
        ["self_attn.q_norm"] = "attn_q_norm", ["self_attn.k_norm"] = "attn_k_norm",       // qwen3
        ["self_attn.qkv_proj"] = "attn_qkv", ["mlp.gate_up_proj"] = "ffn_up",             // phi3: fused, rows as HF has them
    };

    /// <summary>Gemma 2's four norms per block (its post_attention_layernorm is not llama's ffn_norm).</summary>
    static readonly Dictionary<string, string> Gemma2Norms = new()
    {
        ["post_attention_layernorm"] = "post_attention_norm", ["pre_feedforward_layernorm"] = "ffn_norm",
        ["post_feedforward_layernorm"] = "post_ffw_norm",
    };

    /// <summary>llama.cpp's name of an HF tensor (gguf-py tensor_mapping.py), or null for tensors it has no slot for.</summary>
    public static string? GgufName(string hf, string arch = "llama")
    {
        switch (hf)
        {
            case "model.embed_tokens.weight": return "token_embd.weight";
            case "model.norm.weight": return "output_norm.weight";
            case "lm_head.weight": return "output.weight";
        }
        var m = LayerName().Match(hf);
        if (!m.Success) return null;
        string rest = m.Groups[2].Value;
        int dot = rest.LastIndexOf('.');
        string module = rest[..dot], suffix = rest[(dot + 1)..];
        string? g = arch == "gemma2" && Gemma2Norms.TryGetValue(module, out var norm) ? norm : LayerTensors.GetValueOrDefault(module);
        return suffix is "weight" or "bias" && g is not null ? $"blk.{m.Groups[1].Value}.{g}.{suffix}" : null;
    }

    /// <summary>
    /// 1-D tensors and norms stay F32 (convert_hf_to_gguf.py and llama-quantize agree); 2-D tensors: f16/bf16/q8_0 as
    /// convert_hf_to_gguf.py writes them (a q8_0 tensor whose rows are not whole 32-value blocks falls back to F16, as
    /// the converter's QuantError path does); q4_0/q4_K_M as llama-quantize chooses per tensor (<see cref="LlamaQuantizeTypes"/>).
    /// </summary>
    static GgmlType TypeFor(string name, long[] shape, GgufFileType fileType, int layer, int layers, bool hasOutput, Action<string>? note)
    {
        if (shape.Length <= 1 || name.EndsWith("_norm.weight", StringComparison.Ordinal) || fileType == GgufFileType.AllF32) return GgmlType.F32;
        switch (fileType)
        {
            case GgufFileType.MostlyF16: return GgmlType.F16;
            case GgufFileType.MostlyBF16: return GgmlType.BF16;
            case GgufFileType.MostlyQ8_0:
                if (shape[^1] % GgmlQuants.Q8_0Block == 0) return GgmlType.Q8_0;
                note?.Invoke($"{name}: rows of {shape[^1]} values are not whole q8_0 blocks of 32; written as f16");
                return GgmlType.F16;
            default:
                var type = LlamaQuantizeTypes.For(fileType, name, shape[^1], layer, layers, hasOutput, out var fallback);
                if (fallback is not null) note?.Invoke(fallback);
                return type;
        }
    }

    static void WriteParameter(Stream s, TorchSharp.Modules.Parameter p, int? permuteHeads, bool plusOne, GgmlType type)
    {
        using var scope = NewDisposeScope();
        var t = p.detach().to(ScalarType.Float32, CPU);
        if (plusOne) t = t.Plus(1L);
        if (permuteHeads is int heads) t = PermuteRows(t, heads);
        var values = t.contiguous().data<float>().ToArray();
        s.Write(GgmlQuants.Encode(type, values));
    }

    /// <summary>
    /// convert_hf_to_gguf.py LlamaModel.permute: rows of each head go from [first half; second half] (HF rotate-half)
    /// to interleaved pairs (llama.cpp's rope). Applies to weights [rows, in] and biases [rows].
    /// </summary>
    public static Tensor PermuteRows(Tensor w, int heads)
    {
        long rows = w.shape[0];
        var rest = w.shape.Skip(1).ToArray();
        return w.reshape([heads, 2, rows / heads / 2, .. rest]).transpose(1, 2).reshape(w.shape);
    }

    /// <summary>
    /// LlamaModel.generate_extra_tensors for rope_type llama3: per frequency of the rotary half, the divisor llama.cpp
    /// applies (1 for short wavelengths, factor for long ones, smoothed between), in float32 as the converter does.
    /// </summary>
    public static float[] Llama3RopeFactors(double theta, int headDim, RopeScaling rs)
    {
        double lowWavelen = rs.OriginalMaxPositionEmbeddings / rs.LowFreqFactor;
        double highWavelen = rs.OriginalMaxPositionEmbeddings / rs.HighFreqFactor;
        var factors = new float[headDim / 2];
        for (int i = 0; i < factors.Length; i++)
        {
            float freq = 1.0f / MathF.Pow((float)theta, 2 * i / (float)headDim);
            double wavelen = 2 * Math.PI / freq;
            if (wavelen < highWavelen) factors[i] = 1f;
            else if (wavelen > lowWavelen) factors[i] = (float)rs.Factor;
            else
            {
                double smooth = (rs.OriginalMaxPositionEmbeddings / wavelen - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor);
                factors[i] = (float)(1 / ((1 - smooth) / rs.Factor + smooth));
            }
        }
        return factors;
    }
}
