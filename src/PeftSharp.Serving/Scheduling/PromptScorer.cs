using PeftSharp.Memory;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Serving.Scheduling;

/// <summary>
/// A prefill that also scores the prompt: the log probability of every prompt token given the tokens before it, with
/// the top alternatives. What /v1/completions returns for <c>echo</c> + <c>logprobs</c> (vLLM's prompt logprobs), the
/// call evaluation harnesses (lm-evaluation-harness's local-completions, HELM) score text with. The first token has no
/// context: no logprob.
/// </summary>
/// <remarks>
/// It is the row's own prefill (<see cref="RunningBatch"/>): the cache it fills is the row's cache, so a scored row
/// costs no second forward, its cache is one of max_batch rows as `peft plan --serve` counts them, and the queue's
/// limits apply. The prompt goes through in chunks that continue the cache, so the logits held at once are at most
/// <see cref="ServePlanner.ScoringLogitsBudgetBytes"/> (and a chunk is at most the server's prefill token budget) whatever the prompt's
/// length and vocabulary: the whole prompt at once would hold T x V floats, 1 GiB at 2,048 tokens of a 128k
/// vocabulary. A model whose cache goes stale inside the prompt (Phi-3 longrope past its original context: every key
/// takes the long factors then) runs it in one forward.
/// </remarks>
internal static class PromptScorer
{
    /// <summary>Tokens per forward: the planner's rule (<see cref="ServePlanner.ScoringChunkTokens"/>), so `peft plan --serve`
    /// counts the chunk this server runs.</summary>
    public static int ChunkTokens(int vocab, long maxPrefillTokens) => ServePlanner.ScoringChunkTokens(vocab, maxPrefillTokens);

    /// <summary>
    /// Feeds <paramref name="prompt"/> into <paramref name="cache"/> (the caller set the row's adapter) and returns the
    /// entries for tokens 1..T-1, each with its top <paramref name="top"/>. With <paramref name="next"/>, the last
    /// token is fed too and <paramref name="next"/> picks the first generated token from its logits; without, the last
    /// token needs no forward (nothing is generated).
    /// </summary>
    public static GeneratedToken[] Prefill(CausalLM model, IReadOnlyList<int> prompt, int top, KvCache cache, int chunkTokens,
        Func<Tensor, GeneratedToken>? next, out GeneratedToken first)
    {
        int t = prompt.Count, vocab = model.Config.VocabSize, fed = next is null ? t - 1 : t;
        int chunk = model.CacheGoesStale(1, t - 1) ? t : chunkTokens;
        var result = new GeneratedToken[t - 1];
        first = default;
        using var _ = no_grad();
        for (int start = 0; start < fed; start += chunk)
        {
            // Logits at position i predict token i + 1.
            int end = Math.Min(fed, start + chunk), scored = Math.Min(end, t - 1) - start;
            using var scope = NewDisposeScope();
            var ids = tensor(prompt.Skip(start).Take(end - start).Select(i => (long)i).ToArray(), ScalarType.Int64, model.Device).unsqueeze(0);
            var logits = model.Forward(ids, cache)[0];   // [n, V]
            if (end == t) first = next!(logits[-1]);
            if (scored == 0) continue;
            var lp = logits.narrow(0, 0, scored).to_type(ScalarType.Float32).log_softmax(-1);   // raw logits, as vLLM reports them
            var targets = tensor(prompt.Skip(start + 1).Take(scored).Select(i => (long)i).ToArray(), ScalarType.Int64, lp.device);
            float[] chosen = lp.gather(1, targets.unsqueeze(1)).cpu().data<float>().ToArray();
            int k = Math.Min(top, vocab);
            float[] topValues = [];
            long[] topIds = [];
            if (k > 0)
            {
                var (v, ix) = lp.topk(k);
                topValues = v.cpu().data<float>().ToArray();
                topIds = ix.cpu().data<long>().ToArray();
            }
            for (int i = 0; i < scored; i++)
                result[start + i] = new GeneratedToken(prompt[start + i + 1], chosen[i],
                    Enumerable.Range(0, k).Select(j => ((int)topIds[i * k + j], topValues[i * k + j])).ToArray());
        }
        return result;
    }
}
