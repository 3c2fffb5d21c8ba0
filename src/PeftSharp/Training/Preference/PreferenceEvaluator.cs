using System.Text.Json.Nodes;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Training.Preference;

/// <summary>An evaluation on held-out pairs: mean loss, TRL's reward metrics and exact match of the chosen answers.</summary>
internal sealed record PreferenceEvalResult(double Loss, PairMetrics Metrics, double? ExactMatch, int ExactMatchExamples)
{
    public double RewardAccuracy => Metrics.RewardAccuracy;

    /// <summary>An evaluation as <see cref="PreferenceTrainer"/> recorded it in metrics.jsonl (eval_ fields), or null.</summary>
    internal static PreferenceEvalResult? FromRecord(JsonNode? rec) => rec is null ? null
        : new(rec["eval_loss"]!.GetValue<double>(), PairMetrics.FromRecord(rec, "eval_"), rec["eval_accuracy"]?.GetValue<double>(), rec["eval_examples"]?.GetValue<int>() ?? 0);
}

internal static class PreferenceEvaluator
{
    /// <summary>
    /// Scores the eval <paramref name="pairs"/> with the objective (no grad) and, when it has eval prompts, the exact
    /// match of greedy decoding against the chosen response (at most <paramref name="maxExactMatch"/> prompts).
    /// </summary>
    public static PreferenceEvalResult Run(CausalLM model, ITrainingMethod? method, PreferenceObjective objective, IReadOnlyList<TokenizedPair> pairs,
        IReadOnlyList<PeftSharp.Data.PromptAnswer> prompts, int? eosId, int batchSize, int maxExactMatch = int.MaxValue)
    {
        var metrics = new PairMetrics();
        double loss = 0;
        long chosenTokens = Math.Max(1, pairs.Sum(p => (long)p.Chosen.LossTokens));
        var policy = method ?? new BaseForward();
        using (no_grad())
        {
            for (int i = 0; i < pairs.Count; i += batchSize)
            {
                using var scope = NewDisposeScope();
                var batch = pairs.Skip(i).Take(batchSize).ToList();
                loss += objective.Loss(model, policy, batch, eosId ?? 0, pairs.Count, chosenTokens, metrics).item<float>();
            }
        }
        double? exact = null;
        int used = 0;
        if (prompts.Count > 0 && maxExactMatch > 0)
        {
            var r = Evaluator.Run(model, [], prompts, eosId, batchSize, maxExactMatch, method);
            (exact, used) = (r.ExactMatch, r.Examples);
        }
        return new PreferenceEvalResult(pairs.Count > 0 ? loss : double.NaN, metrics, exact, used);
    }

    /// <summary>The model as loaded (no trainable parts), for scoring an adapter applied outside a training method.</summary>
    sealed class BaseForward : ITrainingMethod
    {
        public string Description => "as loaded";
        public IEnumerable<(string Name, TorchSharp.Modules.Parameter P)> TrainableParameters => [];
        public void Save(string dir) => throw new NotSupportedException();
    }
}
