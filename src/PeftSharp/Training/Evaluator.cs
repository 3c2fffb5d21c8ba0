using PeftSharp.Data;
using PeftSharp.Generation;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>One evaluation of a run on its eval data.</summary>
/// <param name="Loss">Mean next-token cross entropy (nats per token) over the eval sequences' loss tokens.</param>
/// <param name="ExactMatch">Fraction (0-1) of eval prompts whose greedy answer is exactly the expected one; null when none were decoded.</param>
/// <param name="Examples">Eval sequences the loss was measured on.</param>
/// <param name="Samples">The first few exact-match prompts with what greedy decoding produced (for people to read).</param>
public sealed record EvalResult(double Loss, double? ExactMatch, int Examples, IReadOnlyList<EvalSample>? Samples = null);

/// <summary>One exact-match prompt: its ids, the expected answer's ids, the greedy output's ids (end token included when produced).</summary>
public sealed record EvalSample(int[] Prompt, int[] Expected, int[] Got, bool Exact);

/// <summary>
/// Eval loss (mean next-token cross entropy over the eval sequences' loss tokens) and exact-match accuracy:
/// greedy decoding (temperature 0) from each prompt must produce exactly the answer's tokens followed by EOS or, for a
/// chat-template rendering, by the template's end-of-turn token (<see cref="PromptAnswer.EndIds"/>).
/// </summary>
internal static class Evaluator
{
    /// <summary>How many exact-match prompts are kept as <see cref="EvalResult.Samples"/>.</summary>
    public const int SampleCount = 3;

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
        var samples = new List<EvalSample>();
        var used = prompts.Take(maxExactMatch).ToList();
        if (used.Count > 0)
        {
            int hits = 0;
            foreach (var p in used)
            {
                var ends = (eosId is int eos ? [eos] : Array.Empty<int>()).Concat(p.EndIds).ToHashSet();
                int length = p.Answer.Length + (ends.Count > 0 ? 1 : 0);
                var got = TextGenerator.Generate(model, p.Prompt, new SamplingOptions { MaxNewTokens = length }, ends).ToArray();
                bool hit = got.Length == length && got.AsSpan(0, p.Answer.Length).SequenceEqual(p.Answer) && (ends.Count == 0 || ends.Contains(got[^1]));
                if (hit) hits++;
                if (samples.Count < SampleCount) samples.Add(new EvalSample(p.Prompt.ToArray(), p.Answer.ToArray(), got, hit));
            }
            exact = (double)hits / used.Count;
        }
        return new EvalResult(count > 0 ? sum / count : double.NaN, exact, used.Count, samples);
    }
}
