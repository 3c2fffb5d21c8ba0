namespace PeftSharp.Memory;

/// <summary>
/// The Hugging Face checkpoint's module names of a decoder block, in one place: the planner's <see cref="ModelShape"/>
/// lists them and the engine builds its modules under them (PeftSharp's Models/Attention.cs and DecoderLayer.cs), so
/// the two cannot drift apart (tests/PeftSharp.Tests/Models/PublishedConfigTests checks the resulting shapes agree).
/// </summary>
internal static class ModuleNames
{
    /// <summary>The attention and MLP sub-modules of a Llama-style block (model.layers.N.self_attn / .mlp).</summary>
    public const string SelfAttn = "self_attn", Mlp = "mlp";

    /// <summary>Llama-style blocks (llama, mistral, qwen2, qwen3, gemma, gemma2): one Linear per projection.</summary>
    public static class Llama
    {
        /// <summary>Attention projections, in HF module order.</summary>
        public const string QProj = "q_proj", KProj = "k_proj", VProj = "v_proj", OProj = "o_proj";
        /// <summary>MLP projections, in HF module order.</summary>
        public const string GateProj = "gate_proj", UpProj = "up_proj", DownProj = "down_proj";
        /// <summary>Qwen3's per-head RMSNorms on queries and keys.</summary>
        public const string QNorm = "q_norm", KNorm = "k_norm";
    }

    /// <summary>Phi-3: q/k/v fused into one Linear (rows q, k, v) and gate/up into one (rows gate, up); o_proj and
    /// down_proj as <see cref="Llama"/>.</summary>
    public static class Phi3
    {
        /// <summary>The fused projections.</summary>
        public const string QkvProj = "qkv_proj", GateUpProj = "gate_up_proj";
    }

    /// <summary>GPT-2 (transformer.h.N.attn / .mlp): Conv1D projections.</summary>
    public static class Gpt2
    {
        /// <summary>Fused q/k/v, the attention output, the MLP's up and down projections.</summary>
        public const string CAttn = "c_attn", CProj = "c_proj", CFc = "c_fc";
    }
}
