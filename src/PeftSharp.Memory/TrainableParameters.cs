namespace PeftSharp.Memory;

/// <summary>One tensor the optimiser updates (per-tensor sizes matter: 8-bit Adam keeps small ones in 32 bit).</summary>
/// <param name="Name">Its name as PEFT saves it, e.g. <c>model.layers.0.self_attn.q_proj.lora_A.weight</c>.</param>
/// <param name="Elements">Its number of elements.</param>
public sealed record TrainableTensor(string Name, long Elements);

/// <summary>The tensors each method trains, named as PEFT saves them.</summary>
internal static class TrainableParameters
{
    public static IReadOnlyList<TrainableTensor> For(ModelShape model, PlanRequest request) => request.Method switch
    {
        TuningMethod.Full => Full(model),
        TuningMethod.Adapter => Houlsby(model, request.AdapterBottleneck),
        TuningMethod.PromptTuning => [new("prompt_embeddings", (long)request.VirtualTokens * model.Config.HiddenSize)],
        TuningMethod.Lora or TuningMethod.Dora or TuningMethod.Qlora or TuningMethod.Qdora => Lora(model, request),
        // A method added to TuningMethod but not here was counted as LoRA, silently (README "Adding a tuning method").
        _ => throw new PlanException("method", $"{request.Method} has no count of trainable parameters (PeftSharp.Memory/TrainableParameters.cs)"),
    };

    static List<TrainableTensor> Full(ModelShape model)
    {
        var list = new List<TrainableTensor>();
        foreach (var m in model.Modules.Where(m => m.Parameters > 0))
        {
            list.Add(new(m.Name + ".weight", m.WeightElements));
            if (m.BiasElements > 0) list.Add(new(m.Name + ".bias", m.BiasElements));
        }
        return list;
    }

    /// <summary>LoRA: A [r, in] + B [out, r] = r*(in+out); DoRA adds the magnitude vector [out].
    /// Embeddings use lora_embedding_A [r, rows] and B [dim, r], the same count.</summary>
    static List<TrainableTensor> Lora(ModelShape model, PlanRequest request)
    {
        var targets = request.Targets ?? TargetMatcher.DefaultFor(model.Config.ModelType);
        var list = new List<TrainableTensor>();
        foreach (var m in model.Modules.Where(m => m.Kind != ModuleKind.Norm && !m.Tied && targets.Matches(m)))
        {
            bool emb = m.Kind == ModuleKind.Embedding;
            list.Add(new(m.Name + (emb ? ".lora_embedding_A" : ".lora_A.weight"), request.Rank * m.In));
            list.Add(new(m.Name + (emb ? ".lora_embedding_B" : ".lora_B.weight"), request.Rank * m.Out));
            if (request.IsDora) list.Add(new(m.Name + ".lora_magnitude_vector", m.Out));
        }
        if (list.Count == 0) throw new PlanException("target_modules", $"no module of {model.Name} matches");
        return list;
    }

    /// <summary>Houlsby: two bottleneck adapters per block (after attention and after the MLP), each
    /// down h->m and up m->h with biases. The layer norms Houlsby also trains are left frozen here.</summary>
    static List<TrainableTensor> Houlsby(ModelShape model, int m)
    {
        long h = model.Config.HiddenSize;
        var list = new List<TrainableTensor>();
        for (int i = 0; i < model.Config.NumHiddenLayers; i++)
            foreach (var where in new[] { "attn", "mlp" })
            {
                string p = $"layers.{i}.adapter_{where}.";
                list.Add(new(p + "down.weight", m * h));
                list.Add(new(p + "down.bias", m));
                list.Add(new(p + "up.weight", m * h));
                list.Add(new(p + "up.bias", h));
            }
        return list;
    }
}
