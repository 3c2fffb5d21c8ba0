namespace PeftSharp.Memory;

/// <summary>What a parameterised module is, which decides its parameter count and whether adapters can target it.</summary>
public enum ModuleKind
{
    /// <summary>A Linear (or GPT-2 Conv1D) projection: weight [out, in], optional bias [out].</summary>
    Linear,
    /// <summary>An embedding table: weight [rows, dim].</summary>
    Embedding,
    /// <summary>An RMSNorm or LayerNorm: weight [dim], optional bias [dim].</summary>
    Norm,
}

/// <summary>
/// One parameterised leaf module under its Hugging Face name.
/// Linear: weight [Out, In] (+ bias [Out]). Embedding: weight [In = rows, Out = dim]. Norm: weight [Out] (+ bias).
/// A tied module (lm_head sharing embed_tokens) owns no parameters of its own.
/// </summary>
/// <param name="Name">Full module name as in the checkpoint, e.g. <c>model.layers.0.self_attn.q_proj</c>.</param>
/// <param name="Kind">Linear, embedding or norm.</param>
/// <param name="In">Input features (embedding: rows, the vocabulary or positions).</param>
/// <param name="Out">Output features (embedding: the dimension; norm: its width).</param>
/// <param name="Bias">Whether it has a bias of <paramref name="Out"/> elements.</param>
/// <param name="Layer">The decoder block it belongs to (0-based); null outside the blocks.</param>
/// <param name="Tied">Shares its weight with another module (an output head tied to the embeddings).</param>
public sealed record ModuleShape(string Name, ModuleKind Kind, long In, long Out, bool Bias = false, int? Layer = null, bool Tied = false)
{
    /// <summary>Elements of the weight it owns (0 when tied).</summary>
    public long WeightElements => Tied ? 0 : Kind == ModuleKind.Norm ? Out : In * Out;

    /// <summary>Elements of its bias (0 without one or when tied).</summary>
    public long BiasElements => Tied || !Bias ? 0 : Out;

    /// <summary>Parameters it owns: weight plus bias elements.</summary>
    public long Parameters => WeightElements + BiasElements;
}
