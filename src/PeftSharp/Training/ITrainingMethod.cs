using PeftSharp.Models;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// What a fine-tuning method (full, LoRA, QLoRA, adapters, prompt tuning, ...) gives the trainer: the parameters
/// it trains, with stable names (checkpoints store them by name), and how to save the result.
/// </summary>
internal interface ITrainingMethod
{
    /// <summary>One line for logs, e.g. "LoRA r=8 on q_proj,v_proj: 0.42M trainable of 3.2M".</summary>
    string Description { get; }
    IEnumerable<(string Name, Parameter P)> TrainableParameters { get; }
    /// <summary>Writes the trained artefact (an adapter folder, or a full HF model folder) to <paramref name="dir"/>.</summary>
    void Save(string dir);
    /// <summary>The logits the loss sees for real tokens [B, T, V] (a soft prompt enters through the model's input-embeddings hook).</summary>
    Tensor Forward(CausalLM model, Tensor ids, Tensor? attentionMask) => model.Forward(ids, attentionMask: attentionMask);
}
