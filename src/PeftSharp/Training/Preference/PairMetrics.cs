using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace PeftSharp.Training.Preference;

/// <summary>
/// Sums over pairs of what TRL logs per step and evaluation, averaged on output: rewards/chosen, rewards/rejected,
/// rewards/accuracies (share of pairs whose chosen reward is strictly higher; ties count as wrong, as in TRL),
/// rewards/margins, logps/chosen, logps/rejected, and for ORPO nll_loss, log_odds_ratio, log_odds_chosen.
/// </summary>
internal sealed class PairMetrics
{
    public int Pairs { get; private set; }
    double _chosen, _rejected, _correct, _margin, _logpChosen, _logpRejected, _logpCorrect, _logOddsRatio, _logOdds;
    double _nll;
    bool _orpo;

    public double RewardAccuracy => Mean(_correct);
    public double RewardMargin => Mean(_margin);
    public double ChosenReward => Mean(_chosen);
    public double RejectedReward => Mean(_rejected);
    public double ChosenLogps => Mean(_logpChosen);
    public double RejectedLogps => Mean(_logpRejected);
    /// <summary>Share of pairs where the policy itself gives the chosen response the higher log-prob (no reference involved; `peft eval` shows it for the base too).</summary>
    public double LogpAccuracy => Mean(_logpCorrect);

    double Mean(double sum) => Pairs > 0 ? sum / Pairs : double.NaN;

    /// <summary>Adds a batch: rewards and log-probs [B] each.</summary>
    public void Add(Tensor chosenRewards, Tensor rejectedRewards, Tensor chosenLogps, Tensor rejectedLogps)
    {
        using var scope = NewDisposeScope();
        double[] c = Values(chosenRewards), r = Values(rejectedRewards), lc = Values(chosenLogps), lr = Values(rejectedLogps);
        for (int i = 0; i < c.Length; i++)
        {
            _chosen += c[i]; _rejected += r[i]; _margin += c[i] - r[i]; _correct += c[i] > r[i] ? 1 : 0;
            _logpChosen += lc[i]; _logpRejected += lr[i]; _logpCorrect += lc[i] > lr[i] ? 1 : 0;
        }
        Pairs += c.Length;
    }

    /// <summary>
    /// ORPO's extra terms: a batch's share of the chosen NLL (its summed token losses over the whole step's or
    /// evaluation's chosen tokens, so the shares add up to the mean) and the per-pair log σ(log odds) and log odds.
    /// </summary>
    public void AddOrpo(double nllShare, Tensor logOddsRatio, Tensor logOdds)
    {
        _orpo = true;
        _nll += nllShare;
        _logOddsRatio += Values(logOddsRatio).Sum();
        _logOdds += Values(logOdds).Sum();
    }

    /// <summary>
    /// The metrics <see cref="WriteTo"/> wrote into <paramref name="rec"/> (a resumed run's "before" figures, read back from
    /// metrics.jsonl): each mean kept as the sum over one pair, so every property reads the recorded value.
    /// </summary>
    internal static PairMetrics FromRecord(JsonNode rec, string prefix = "")
    {
        double Get(string key) => rec[prefix + key]?.GetValue<double>() ?? double.NaN;
        var m = new PairMetrics
        {
            Pairs = 1,
            _chosen = Get("rewards/chosen"), _rejected = Get("rewards/rejected"), _correct = Get("rewards/accuracies"),
            _margin = Get("rewards/margins"), _logpChosen = Get("logps/chosen"), _logpRejected = Get("logps/rejected"),
            _logpCorrect = Get("logps/accuracies"),
            _orpo = rec[prefix + "nll_loss"] is not null,
        };
        if (m._orpo) (m._nll, m._logOddsRatio, m._logOdds) = (Get("nll_loss"), Get("log_odds_ratio"), Get("log_odds_chosen"));
        return m;
    }

    static double[] Values(Tensor t)
    {
        using var d = t.detach().to_type(ScalarType.Float64).cpu();
        return d.data<double>().ToArray();
    }

    /// <summary>The metrics as JSON fields, TRL's names after <paramref name="prefix"/> ("" for training steps, "eval_" for evaluations).</summary>
    public void WriteTo(JsonObject rec, string prefix = "")
    {
        rec[prefix + "rewards/chosen"] = MetricsLog.Round(ChosenReward);
        rec[prefix + "rewards/rejected"] = MetricsLog.Round(RejectedReward);
        rec[prefix + "rewards/accuracies"] = MetricsLog.Round(RewardAccuracy);
        rec[prefix + "rewards/margins"] = MetricsLog.Round(RewardMargin);
        rec[prefix + "logps/chosen"] = MetricsLog.Round(ChosenLogps);
        rec[prefix + "logps/rejected"] = MetricsLog.Round(RejectedLogps);
        rec[prefix + "logps/accuracies"] = MetricsLog.Round(LogpAccuracy);
        if (!_orpo) return;
        rec[prefix + "nll_loss"] = MetricsLog.Round(_nll);
        rec[prefix + "log_odds_ratio"] = MetricsLog.Round(Mean(_logOddsRatio));
        rec[prefix + "log_odds_chosen"] = MetricsLog.Round(Mean(_logOdds));
    }
}
