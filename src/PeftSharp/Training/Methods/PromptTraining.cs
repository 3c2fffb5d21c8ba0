using PeftSharp.Models;
using PeftSharp.Tuners.PromptTuning;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training.Methods;

/// <summary>
/// Prompt tuning: only the soft prompt trains. Its forward prepends the virtual tokens and drops their logits,
/// so labels, masks and the loss stay those of the real tokens.
/// </summary>
public sealed class PromptTraining : ITrainingMethod
{
    readonly CausalLM _model;
    public PromptEmbeddings Prompt { get; }

    public PromptTraining(CausalLM model, PromptEmbeddings prompt)
    {
        _model = model;
        Prompt = prompt;
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    public string Description => $"prompt tuning ({Prompt.Count} virtual tokens): {Prompt.Embeddings.numel() / 1e6:F3}M trainable of {_model.ParameterCount() / 1e6:F2}M";

    public IEnumerable<(string Name, Parameter P)> TrainableParameters => [("prompt_embeddings", Prompt.Embeddings)];

    public void Save(string dir) => Prompt.Save(_model, dir);

    public Tensor Forward(CausalLM model, Tensor ids, Tensor? attentionMask) => Logits(model, Prompt, ids, attentionMask);

    public Tensor? GenerationPrefix => Prompt.Embeddings;

    public static Tensor Logits(CausalLM model, PromptEmbeddings prompt, Tensor ids, Tensor? attentionMask)
    {
        using var scope = NewDisposeScope();
        var embeds = prompt.Prepend(model, ids);
        Tensor? mask = attentionMask is null ? null
            : cat([ones(ids.shape[0], prompt.Count, attentionMask.dtype, attentionMask.device), attentionMask], 1);
        var logits = model.Forward(null, attentionMask: mask, inputsEmbeds: embeds);
        return logits.narrow(1, prompt.Count, ids.shape[1]).MoveToOuterDisposeScope();
    }
}
