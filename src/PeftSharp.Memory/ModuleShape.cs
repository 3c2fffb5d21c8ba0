namespace PeftSharp.Memory;

public enum ModuleKind { Linear, Embedding, Norm }

/// <summary>
/// One parameterised leaf module under its Hugging Face name.
/// Linear: weight [Out, In] (+ bias [Out]). Embedding: weight [In = rows, Out = dim]. Norm: weight [Out] (+ bias).
/// A tied module (lm_head sharing embed_tokens) owns no parameters of its own.
/// </summary>
public sealed record ModuleShape(string Name, ModuleKind Kind, long In, long Out, bool Bias = false, int? Layer = null, bool Tied = false)
{
    public long WeightElements => Tied ? 0 : Kind == ModuleKind.Norm ? Out : In * Out;

    public long BiasElements => Tied || !Bias ? 0 : Out;

    public long Parameters => WeightElements + BiasElements;
}
