using static PeftSharp.Memory.ModuleNames;

namespace PeftSharp.Memory;

/// <summary>A model as its list of parameterised modules, named as in the Hugging Face checkpoint. Supported
/// <c>model_type</c>s: llama, mistral, qwen2, qwen3, gemma, gemma2, phi3, gpt2. PEFT methods count their trainable
/// parameters over it (<c>IPeftMethod.TrainableParameterCount</c>).</summary>
public sealed class ModelShape
{
    /// <summary>The model's display name: the preset, the folder holding config.json, or the <c>model_type</c>.</summary>
    public string Name { get; }
    /// <summary>The config the shape was built from.</summary>
    public ModelConfig Config { get; }
    /// <summary>Every parameterised leaf module (embeddings, Linears, norms, the output head) in checkpoint order.</summary>
    public IReadOnlyList<ModuleShape> Modules { get; }

    /// <summary>Parameters of the whole model (a tied output head counted once), as the published model cards give them.</summary>
    public long TotalParameters => Modules.Sum(m => m.Parameters);

    ModelShape(string name, ModelConfig config, IReadOnlyList<ModuleShape> modules)
    {
        Name = name;
        Config = config;
        Modules = modules;
    }

    /// <summary>Builds the shape of a config.</summary>
    /// <param name="config">The parsed config.json (validated here).</param>
    /// <param name="name">Display name; null = the <c>model_type</c>.</param>
    /// <exception cref="PlanException">An invalid config (field named) or an unsupported <c>model_type</c>.</exception>
    public static ModelShape FromConfig(ModelConfig config, string? name = null)
    {
        config.Validate();
        var modules = config.ModelType switch
        {
            "llama" or "mistral" or "qwen2" or "qwen3" or "gemma" or "gemma2" or "phi3" => DecoderModules(config),
            "gpt2" => Gpt2Modules(config),
            _ => throw new PlanException("model_type", $"unsupported '{config.ModelType}' (llama, mistral, qwen2, qwen3, gemma, gemma2, phi3, gpt2)"),
        };
        return new ModelShape(name ?? config.ModelType, config, modules);
    }

    /// <summary>Loads config.json (or a model folder holding one), named after its folder.</summary>
    /// <exception cref="PlanException">A missing, unreadable or invalid config.json (file and field named) or an
    /// unsupported <c>model_type</c>.</exception>
    public static ModelShape Load(string path) => FromConfig(ModelConfig.Load(path), DisplayName(path));

    /// <summary>"models/foo/config.json" and "models/foo" are both called "foo".</summary>
    static string DisplayName(string path)
    {
        string full = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
        return Path.GetFileName(full) == "config.json" ? Path.GetFileName(Path.GetDirectoryName(full)!) : Path.GetFileName(full);
    }

    /// <summary>The parameters of decoder block <paramref name="layer"/> (0-based; used for FSDP/ZeRO-3 all-gather buffers).</summary>
    public long LayerParameters(int layer) => Modules.Where(m => m.Layer == layer).Sum(m => m.Parameters);

    /// <summary>Llama-style blocks; Qwen2 adds q/k/v biases, Qwen3 per-head q/k norms, Gemma-2 four norms, Phi-3 fused qkv and gate_up.</summary>
    static List<ModuleShape> DecoderModules(ModelConfig c)
    {
        long h = c.HiddenSize, q = (long)c.NumAttentionHeads * c.ResolvedHeadDim, kv = (long)c.KeyValueHeads * c.ResolvedHeadDim;
        bool qkvBias = c.AttentionBias || c.ModelType == "qwen2";
        var m = new List<ModuleShape> { new("model.embed_tokens", ModuleKind.Embedding, c.VocabSize, h) };
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            string p = $"model.layers.{i}.";
            string attn = p + SelfAttn + ".", mlp = p + Mlp + ".";
            if (c.ModelType == "phi3")
            {
                m.Add(new(attn + Phi3.QkvProj, ModuleKind.Linear, h, q + 2 * kv, false, i));
                m.Add(new(attn + Llama.OProj, ModuleKind.Linear, q, h, false, i));
                m.Add(new(mlp + Phi3.GateUpProj, ModuleKind.Linear, h, 2L * c.IntermediateSize, false, i));
                m.Add(new(mlp + Llama.DownProj, ModuleKind.Linear, c.IntermediateSize, h, false, i));
            }
            else
            {
                m.Add(new(attn + Llama.QProj, ModuleKind.Linear, h, q, qkvBias, i));
                m.Add(new(attn + Llama.KProj, ModuleKind.Linear, h, kv, qkvBias, i));
                m.Add(new(attn + Llama.VProj, ModuleKind.Linear, h, kv, qkvBias, i));
                m.Add(new(attn + Llama.OProj, ModuleKind.Linear, q, h, c.AttentionBias, i));
                m.Add(new(mlp + Llama.GateProj, ModuleKind.Linear, h, c.IntermediateSize, c.MlpBias, i));
                m.Add(new(mlp + Llama.UpProj, ModuleKind.Linear, h, c.IntermediateSize, c.MlpBias, i));
                m.Add(new(mlp + Llama.DownProj, ModuleKind.Linear, c.IntermediateSize, h, c.MlpBias, i));
            }
            if (c.ModelType == "qwen3")
            {
                m.Add(new(attn + Llama.QNorm, ModuleKind.Norm, c.ResolvedHeadDim, c.ResolvedHeadDim, false, i));
                m.Add(new(attn + Llama.KNorm, ModuleKind.Norm, c.ResolvedHeadDim, c.ResolvedHeadDim, false, i));
            }
            m.Add(new(p + "input_layernorm", ModuleKind.Norm, h, h, false, i));
            m.Add(new(p + "post_attention_layernorm", ModuleKind.Norm, h, h, false, i));
            if (c.ModelType == "gemma2")
            {
                m.Add(new(p + "pre_feedforward_layernorm", ModuleKind.Norm, h, h, false, i));
                m.Add(new(p + "post_feedforward_layernorm", ModuleKind.Norm, h, h, false, i));
            }
        }
        m.Add(new("model.norm", ModuleKind.Norm, h, h));
        m.Add(new("lm_head", ModuleKind.Linear, h, c.VocabSize, Tied: c.TieWordEmbeddings));
        return m;
    }

    /// <summary>GPT-2: Conv1D projections (Linear-shaped, with biases), LayerNorms with biases, learned positions.</summary>
    static List<ModuleShape> Gpt2Modules(ModelConfig c)
    {
        long h = c.HiddenSize, inner = c.IntermediateSize;
        var m = new List<ModuleShape>
        {
            new("transformer.wte", ModuleKind.Embedding, c.VocabSize, h),
            new("transformer.wpe", ModuleKind.Embedding, c.MaxPositionEmbeddings, h),
        };
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            string p = $"transformer.h.{i}.";
            m.Add(new(p + "ln_1", ModuleKind.Norm, h, h, true, i));
            m.Add(new(p + "attn." + Gpt2.CAttn, ModuleKind.Linear, h, 3 * h, true, i));
            m.Add(new(p + "attn." + Gpt2.CProj, ModuleKind.Linear, h, h, true, i));
            m.Add(new(p + "ln_2", ModuleKind.Norm, h, h, true, i));
            m.Add(new(p + "mlp." + Gpt2.CFc, ModuleKind.Linear, h, inner, true, i));
            m.Add(new(p + "mlp." + Gpt2.CProj, ModuleKind.Linear, inner, h, true, i));
        }
        m.Add(new("transformer.ln_f", ModuleKind.Norm, h, h, true));
        m.Add(new("lm_head", ModuleKind.Linear, h, c.VocabSize, Tied: true));
        return m;
    }
}
