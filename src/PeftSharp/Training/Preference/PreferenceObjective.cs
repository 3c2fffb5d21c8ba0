using PeftSharp.Data;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Training.Preference;

/// <summary>
/// The loss of a batch of pairs. Chosen and rejected sequences go through the model as one concatenated, padded batch
/// (TRL's concatenated_forward: rows [chosen₁..chosen_B, rejected₁..rejected_B]); DPO first scores the same batch under
/// the reference (no grad), unless its log-probs were precomputed. Losses are normalised by the totals of the whole
/// optimiser step (pairs; ORPO's NLL: chosen tokens), so gradient accumulation equals one large batch.
/// </summary>
internal sealed class PreferenceObjective(PreferenceOptions options, ReferenceModel? reference)
{
    public PreferenceOptions Options { get; } = options;

    /// <summary>Log-probs are length-averaged for IPO (TRL divides by the completion length) and for ORPO; summed for sigmoid DPO.</summary>
    public bool AverageLogps => Options.Method == PreferenceMethod.Orpo || Options.LossType == DpoLossType.Ipo;

    public static Batch PairBatch(IReadOnlyList<TokenizedPair> pairs, Device device, int padId) =>
        Batch.From([.. pairs.Select(p => p.Chosen), .. pairs.Select(p => p.Rejected)], device, padId);

    /// <summary>The reference log-probs of pairs (chosen [B], rejected [B]), as the objective would compute them per batch.</summary>
    public (Tensor Chosen, Tensor Rejected) ReferenceLogps(IReadOnlyList<TokenizedPair> pairs, Device device, int padId)
    {
        if (reference is null) throw new InvalidOperationException("ORPO has no reference model");
        using var scope = NewDisposeScope();
        using var batch = PairBatch(pairs, device, padId);
        var logps = reference.Logps(batch, AverageLogps);
        int b = pairs.Count;
        return (logps.narrow(0, 0, b).MoveToOuterDisposeScope(), logps.narrow(0, b, b).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The loss of <paramref name="pairs"/> as its share of a step of <paramref name="stepPairs"/> pairs and
    /// <paramref name="stepChosenTokens"/> chosen response tokens; adds the batch's metrics to <paramref name="metrics"/>.
    /// <paramref name="precomputed"/>: the reference log-probs of these pairs, when computed once before training.
    /// </summary>
    public Tensor Loss(CausalLM model, ITrainingMethod method, IReadOnlyList<TokenizedPair> pairs, int padId, long stepPairs, long stepChosenTokens,
        PairMetrics metrics, (Tensor Chosen, Tensor Rejected)? precomputed = null)
    {
        using var scope = NewDisposeScope();
        int b = pairs.Count;
        using var batch = PairBatch(pairs, model.Device, padId);
        Tensor? refChosen = null, refRejected = null;
        if (Options.Method == PreferenceMethod.Dpo)
        {
            // The reference pass runs first and frees its activations before the policy pass keeps its own for backward.
            (refChosen, refRejected) = precomputed ?? ReferenceLogpsOf(batch, b);
        }
        var logits = method.Forward(model, batch.InputIds, batch.AttentionMask);
        var logps = PreferenceLoss.SequenceLogps(logits, batch.Labels, AverageLogps);
        var (chosen, rejected) = (logps.narrow(0, 0, b), logps.narrow(0, b, b));
        Tensor loss;
        if (Options.Method == PreferenceMethod.Dpo)
        {
            var r = PreferenceLoss.Dpo(chosen, rejected, refChosen!.to_type(chosen.dtype), refRejected!.to_type(chosen.dtype),
                Options.Beta, Options.LabelSmoothing, Options.LossType);
            loss = r.Losses.sum().DividedBy(stepPairs);
            metrics.Add(r.ChosenRewards, r.RejectedRewards, chosen, rejected);
        }
        else
        {
            var nll = CausalLmLoss.Sum(logits.narrow(0, 0, b), batch.Labels.narrow(0, 0, b)).DividedBy(Math.Max(1, stepChosenTokens));
            var (r, ratio, logOdds) = PreferenceLoss.Orpo(chosen, rejected, Options.Beta);
            loss = nll.Plus(r.Losses.sum().DividedBy(stepPairs));
            metrics.Add(r.ChosenRewards, r.RejectedRewards, chosen, rejected);
            metrics.AddOrpo(nll.item<float>(), ratio, logOdds);
        }
        return loss.MoveToOuterDisposeScope();
    }

    (Tensor, Tensor) ReferenceLogpsOf(Batch batch, int b)
    {
        var logps = reference!.Logps(batch, AverageLogps);
        return (logps.narrow(0, 0, b), logps.narrow(0, b, b));
    }
}
