using PeftSharp.Models;
using PeftSharp.Tuners.PromptTuning;
using TorchSharp.Modules;

namespace PeftSharp.Training.Methods;

/// <summary>
/// Prompt tuning: only the soft prompt trains. It is the model's input-embeddings hook, so the model's own forward
/// prepends the virtual tokens and drops their logits: labels, masks and the loss stay those of the real tokens.
/// </summary>
public sealed class PromptTraining : ITrainingMethod
{
    readonly CausalLM _model;
    public PromptEmbeddings Prompt { get; }

    public PromptTraining(CausalLM model, PromptEmbeddings prompt)
    {
        _model = model;
        Prompt = prompt.AttachTo(model);
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    public string Description => $"prompt tuning ({Prompt.Count} virtual tokens): {Prompt.Embeddings.numel() / 1e6:F3}M trainable of {_model.ParameterCount() / 1e6:F2}M";

    public IEnumerable<(string Name, Parameter P)> TrainableParameters => [("prompt_embeddings", Prompt.Embeddings)];

    public void Save(string dir) => Prompt.Save(_model, dir);
}
