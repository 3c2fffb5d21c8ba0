using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// A hook on a model's input embeddings (prompt tuning puts its soft prompt here), run by <see cref="CausalLM.Forward"/>
/// when a sequence starts (no cached positions yet). Positions it puts before the input are dropped from the logits,
/// so callers see logits for their own tokens only; a KV cache keeps them, so generation continues after them.
/// </summary>
internal interface IInputEmbeddingsHook
{
    /// <summary>The embeddings [B, N + T, H] and mask [B, N + T] to run, and N (0 when the hook does nothing now).</summary>
    (Tensor Embeds, Tensor? AttentionMask, int Prepended) Apply(Tensor embeds, Tensor? attentionMask);
}
