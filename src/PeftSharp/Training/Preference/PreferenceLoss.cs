using PeftSharp.Data;
using static TorchSharp.torch;

namespace PeftSharp.Training.Preference;

/// <summary>Per-pair losses and the implicit rewards (detached) that the metrics report.</summary>
internal sealed record PairLosses(Tensor Losses, Tensor ChosenRewards, Tensor RejectedRewards) : IDisposable
{
    public void Dispose() { Losses.Dispose(); ChosenRewards.Dispose(); RejectedRewards.Dispose(); }
}

/// <summary>
/// The preference objectives, as TRL computes them (dpo_trainer.py, orpo_trainer.py). Inputs are per-sequence
/// log-probabilities of the responses; the arithmetic runs in the inputs' dtype (fp32 in training, fp64 in tests).
/// </summary>
internal static class PreferenceLoss
{
    /// <summary>
    /// TRL's get_batch_logps: sum over response tokens (labels != -100, shifted: logits at t score label t+1) of
    /// log softmax(logits)[label]; with <paramref name="average"/> divided by the response's token count.
    /// Logits in 16-bit are promoted to fp32 first. Returns [N].
    /// </summary>
    public static Tensor SequenceLogps(Tensor logits, Tensor labels, bool average = false)
    {
        using var scope = NewDisposeScope();
        long t = logits.shape[1];
        var l = logits.narrow(1, 0, t - 1);
        if (l.dtype is ScalarType.Float16 or ScalarType.BFloat16) l = l.to_type(ScalarType.Float32);
        var targets = labels.narrow(1, 1, t - 1);
        var mask = ScalarArgs.With((long)TokenSequence.Ignore, ig => targets.ne(ig));
        var safe = ScalarArgs.With(0L, zero => targets.masked_fill(mask.logical_not(), zero));
        var picked = l.gather(2, safe.unsqueeze(2)).squeeze(2) - l.logsumexp(2);
        var m = mask.to_type(picked.dtype);
        var sum = (picked * m).sum(1);
        return (average ? sum / ScalarArgs.With(1L, one => m.sum(1).clamp_min(one)) : sum).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// TRL's dpo_loss. logits z = (πc − πr) − (refc − refr); sigmoid: −(1−ε)·log σ(βz) − ε·log σ(−βz); ipo: (z − 1/(2β))².
    /// Rewards: β·(π − ref), detached.
    /// </summary>
    public static PairLosses Dpo(Tensor policyChosen, Tensor policyRejected, Tensor refChosen, Tensor refRejected,
        double beta, double labelSmoothing = 0, DpoLossType type = DpoLossType.Sigmoid)
    {
        using var scope = NewDisposeScope();
        var z = (policyChosen - policyRejected) - (refChosen - refRejected);
        var losses = type == DpoLossType.Ipo
            ? z.Minus(1.0 / (2 * beta)).square()
            : (-nn.functional.logsigmoid(z.Times(beta))).Times(1 - labelSmoothing) - nn.functional.logsigmoid(z.Times(-beta)).Times(labelSmoothing);
        var chosen = (policyChosen - refChosen).Times(beta).detach();
        var rejected = (policyRejected - refRejected).Times(beta).detach();
        return new PairLosses(losses.MoveToOuterDisposeScope(), chosen.MoveToOuterDisposeScope(), rejected.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// TRL's odds_ratio_loss on length-averaged log-probs: log odds = (πc − πr) − (log(1 − e^πc) − log(1 − e^πr));
    /// the per-pair term is −β·log σ(log odds) (the trainer adds the chosen NLL). Rewards: β·π, detached.
    /// Also returns log σ(log odds) and the log odds, which TRL logs as log_odds_ratio and log_odds_chosen.
    /// </summary>
    public static (PairLosses Losses, Tensor LogOddsRatio, Tensor LogOdds) Orpo(Tensor policyChosen, Tensor policyRejected, double beta)
    {
        using var scope = NewDisposeScope();
        var logOdds = (policyChosen - policyRejected) - (Log1mExp(policyChosen) - Log1mExp(policyRejected));
        var ratio = nn.functional.logsigmoid(logOdds);
        var losses = (-ratio).Times(beta);
        var chosen = policyChosen.Times(beta).detach();
        var rejected = policyRejected.Times(beta).detach();
        return (new PairLosses(losses.MoveToOuterDisposeScope(), chosen.MoveToOuterDisposeScope(), rejected.MoveToOuterDisposeScope()),
            ratio.detach().MoveToOuterDisposeScope(), logOdds.detach().MoveToOuterDisposeScope());
    }

    /// <summary>
    /// log(1 − e^x) for x &lt; 0, TRL's log1p(−exp(x)), evaluated as log(−expm1(x)) near 0 where log1p(−exp(x)) loses
    /// precision (Mächler 2012). x is kept below −1e−7 so an average log-prob of exactly 0 gives a large finite value, not −inf.
    /// </summary>
    public static Tensor Log1mExp(Tensor x)
    {
        using var scope = NewDisposeScope();
        var c = ScalarArgs.With(-1e-7, max => x.clamp_max(max));
        var near = (-c.expm1()).log();
        var far = (-c.exp()).log1p();
        return where(ScalarArgs.With(-0.6931471805599453, ln2 => c.gt(ln2)), near, far).MoveToOuterDisposeScope();
    }
}
