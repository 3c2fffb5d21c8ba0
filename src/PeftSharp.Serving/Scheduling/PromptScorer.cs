using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Serving.Scheduling;

/// <summary>
/// The log probability of every prompt token given the tokens before it, with the top alternatives: what
/// /v1/completions returns for <c>echo</c> + <c>logprobs</c> (vLLM's prompt logprobs), the call evaluation harnesses
/// (lm-evaluation-harness's local-completions, HELM) score text with. The first token has no context: no logprob.
/// </summary>
/// <remarks>
/// Runs on the scheduler's worker (<see cref="BatchScheduler.RunOnModelAsync{T}"/>) between decode steps, with the
/// request's adapter as its one row. The prompt goes through in chunks that continue a KV cache, so the logits held at
/// once are at most <see cref="LogitsBudgetBytes"/> whatever the prompt's length and vocabulary (the whole prompt at
/// once would hold T x V floats: 1 GiB at 2,048 tokens of a 128k vocabulary). A model whose cache goes stale inside
/// the prompt (Phi-3 longrope past its original context: every key takes the long factors then) runs it in one forward.
/// </remarks>
internal static class PromptScorer
{
    /// <summary>The most logits one chunk holds (fp32 bytes).</summary>
    internal const long LogitsBudgetBytes = 64L << 20;

    /// <summary>Entries for tokens 1..T-1 of <paramref name="prompt"/> (token 0 has none), each with its top <paramref name="top"/>.</summary>
    /// <param name="model">The served model (on its worker thread).</param>
    /// <param name="prompt">The prompt's ids.</param>
    /// <param name="adapter">The row's internal adapter name; null = the base.</param>
    /// <param name="top">Alternatives per token (0 = the token's own logprob only).</param>
    /// <param name="chunkTokens">Tokens per forward; null: as many as <see cref="LogitsBudgetBytes"/> allows (tests pass small ones).</param>
    public static GeneratedToken[] Score(CausalLM model, IReadOnlyList<int> prompt, string? adapter, int top, int? chunkTokens = null)
    {
        int t = prompt.Count, vocab = model.Config.VocabSize;
        int chunk = model.CacheGoesStale(1, t - 1) ? t : chunkTokens ?? (int)Math.Max(1, LogitsBudgetBytes / (4L * vocab));
        var result = new GeneratedToken[Math.Max(0, t - 1)];
        using var cache = new KvCache(model.Config.NumLayers) { ExpectedSlots = t };
        model.State.RowAdapters = [adapter];
        try
        {
            for (int start = 0; start < t - 1; start += chunk)
            {
                // Logits at positions start..end-1 predict tokens start+1..end; the last token needs no forward.
                int end = Math.Min(t - 1, start + chunk);
                using var scope = NewDisposeScope();
                using var _ = no_grad();
                var ids = tensor(prompt.Skip(start).Take(end - start).Select(i => (long)i).ToArray(), ScalarType.Int64, model.Device).unsqueeze(0);
                var lp = model.Forward(ids, cache)[0].to_type(ScalarType.Float32).log_softmax(-1);   // [n, V], raw logits as vLLM reports
                var next = tensor(prompt.Skip(start + 1).Take(end - start).Select(i => (long)i).ToArray(), ScalarType.Int64, lp.device);
                float[] chosen = lp.gather(1, next.unsqueeze(1)).cpu().data<float>().ToArray();
                float[] topValues = [];
                long[] topIds = [];
                int k = Math.Min(top, vocab);
                if (k > 0)
                {
                    var (v, ix) = lp.topk(k);
                    topValues = v.cpu().data<float>().ToArray();
                    topIds = ix.cpu().data<long>().ToArray();
                }
                for (int i = 0; i < end - start; i++)
                    result[start + i] = new GeneratedToken(prompt[start + i + 1], chosen[i],
                        Enumerable.Range(0, k).Select(j => ((int)topIds[i * k + j], topValues[i * k + j])).ToArray());
            }
        }
        finally { model.State.RowAdapters = null; }
        return result;
    }
}
