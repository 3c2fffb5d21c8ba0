using PeftSharp.Data;
using PeftSharp.Generation;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Training;

public sealed record EvalResult(double Loss, double? ExactMatch, int Examples);

/// <summary>
/// Eval loss (mean next-token cross entropy over the eval sequences' loss tokens) and exact-match accuracy:
/// greedy decoding (temperature 0) from each prompt must produce exactly the answer's tokens followed by EOS or, for a
/// chat-template rendering, by the template's end-of-turn token (<see cref="PromptAnswer.EndIds"/>).
/// </summary>
public static class Evaluator
{
    public static EvalResult Run(CausalLM model, IReadOnlyList<TokenSequence> sequences, IReadOnlyList<PromptAnswer> prompts,
        int? eosId, int batchSize, int maxExactMatch = int.MaxValue, ITrainingMethod? method = null)
    {
        using var noGrad = no_grad();
        double sum = 0;
        long count = 0;
        for (int i = 0; i < sequences.Count; i += batchSize)
        {
            using var scope = NewDisposeScope();
            using var batch = Batch.From(sequences.Skip(i).Take(batchSize).ToList(), model.Device);
            var logits = method is null ? model.Forward(batch.InputIds, attentionMask: batch.AttentionMask)
                                        : method.Forward(model, batch.InputIds, batch.AttentionMask);
            sum += CausalLmLoss.Sum(logits, batch.Labels).item<float>();
            count += batch.LossTokens;
        }
        double? exact = null;
        var used = prompts.Take(maxExactMatch).ToList();
        if (used.Count > 0)
        {
            int hits = 0;
            foreach (var p in used)
            {
                var ends = (eosId is int eos ? [eos] : Array.Empty<int>()).Concat(p.EndIds).ToHashSet();
                int length = p.Answer.Length + (ends.Count > 0 ? 1 : 0);
                var got = TextGenerator.Generate(model, p.Prompt, new SamplingOptions { MaxNewTokens = length }, ends).ToArray();
                if (got.Length == length && got.AsSpan(0, p.Answer.Length).SequenceEqual(p.Answer) && (ends.Count == 0 || ends.Contains(got[^1]))) hits++;
            }
            exact = (double)hits / used.Count;
        }
        return new EvalResult(count > 0 ? sum / count : double.NaN, exact, used.Count);
    }
}
