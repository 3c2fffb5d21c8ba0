using PeftSharp.Data;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Training.Preference;

/// <summary>
/// DPO's reference model without a second model in memory (torchtune's LoRA-DPO recipe, TRL's ref_adapter_name):
/// the same model with the trained adapter switched off, so the reference is the base; or, after --init-adapter,
/// with a frozen copy of the starting adapter active instead, so the reference is base + that adapter. Runs under
/// no_grad; the adapter selection is restored afterwards.
/// </summary>
internal sealed class ReferenceModel(CausalLM model, string? frozenAdapter = null)
{
    /// <summary>The adapter that plays the reference, or null when the reference is the base (adapters disabled).</summary>
    public string? FrozenAdapter { get; } = frozenAdapter;

    public string Description => FrozenAdapter is null ? "the base (adapters disabled)" : $"base + the frozen initial adapter '{FrozenAdapter}'";

    /// <summary>Per-sequence response log-probs [N] of a batch under the reference.</summary>
    public Tensor Logps(Batch batch, bool average)
    {
        var state = model.State;
        var active = state.Active.ToList();
        bool disabled = state.Disabled;
        try
        {
            if (FrozenAdapter is null) state.Disabled = true;
            else
            {
                state.Active.Clear();
                state.Active.Add((FrozenAdapter, 1.0));
                state.Disabled = false;
            }
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            var logits = model.Forward(batch.InputIds, attentionMask: batch.AttentionMask);
            return PreferenceLoss.SequenceLogps(logits, batch.Labels, average).MoveToOuterDisposeScope();
        }
        finally
        {
            state.Active.Clear();
            state.Active.AddRange(active);
            state.Disabled = disabled;
        }
    }
}
