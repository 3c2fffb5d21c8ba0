using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Generation;

/// <summary>Autoregressive generation for one sequence, with a KV cache.</summary>
internal static class TextGenerator
{
    /// <summary>
    /// Yields new token ids one at a time (for streaming). Stops after <see cref="SamplingOptions.MaxNewTokens"/>
    /// or after emitting an id in <paramref name="stopIds"/> (which is yielded, so callers can see why it stopped).
    /// </summary>
    public static IEnumerable<int> Generate(CausalLM model, IReadOnlyList<int> prompt, SamplingOptions options, IReadOnlyCollection<int> stopIds)
    {
        if (prompt.Count == 0) throw new ArgumentException("the prompt encodes to zero tokens");
        var sampler = new TokenSampler(options, prompt);
        using var cache = new KvCache(model.Config.NumLayers);
        var sequence = prompt.ToList();
        int next = -1;
        for (int step = 0; step < options.MaxNewTokens; step++)
        {
            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                Tensor logits;
                // Phi-3 longrope: at the switch to the long factors the whole sequence is recomputed, as transformers does.
                bool recompute = step > 0 && model.CacheGoesStale(cache.Length, 1);
                if (recompute) cache.Clear();
                if (step == 0 || recompute)
                {
                    using var ids = tensor(sequence.Select(i => (long)i).ToArray(), ScalarType.Int64, model.Device).unsqueeze(0);
                    // A soft prompt (prompt tuning) is the model's input-embeddings hook: it enters here, then lives in the cache.
                    logits = model.Forward(ids, cache, lastOnly: true);
                }
                else
                {
                    using var ids = tensor(new long[] { next }, ScalarType.Int64, model.Device).unsqueeze(0);
                    logits = model.Forward(ids, cache, lastOnly: true);
                }
                next = sampler.Next(logits[0, -1]);
            }
            sequence.Add(next);
            yield return next;
            if (stopIds.Contains(next)) yield break;
        }
    }

    /// <summary>Reference path without a cache: recomputes the whole sequence each step. Used to test the cache.</summary>
    public static List<int> GenerateWithoutCache(CausalLM model, IReadOnlyList<int> prompt, SamplingOptions options, IReadOnlyCollection<int> stopIds)
    {
        var sampler = new TokenSampler(options, prompt);
        var seq = prompt.ToList();
        var produced = new List<int>();
        for (int step = 0; step < options.MaxNewTokens; step++)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var ids = tensor(seq.Select(i => (long)i).ToArray(), ScalarType.Int64, model.Device).unsqueeze(0);
            var logits = model.Forward(ids);
            int next = sampler.Next(logits[0, -1]);
            produced.Add(next);
            seq.Add(next);
            if (stopIds.Contains(next)) break;
        }
        return produced;
    }
}
