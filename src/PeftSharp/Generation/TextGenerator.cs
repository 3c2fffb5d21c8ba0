using PeftSharp.Generation.Fast;
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
    public static IEnumerable<int> Generate(CausalLM model, IReadOnlyList<int> prompt, SamplingOptions options, IReadOnlyCollection<int> stopIds) =>
        Generate(model, prompt, options, stopIds, DecodePath.Auto);

    /// <summary>
    /// <see cref="Generate(CausalLM, IReadOnlyList{int}, SamplingOptions, IReadOnlyCollection{int})"/> with a choice of
    /// decode path: the prompt is prefilled by the libtorch forward; then, where <see cref="FastDecodeEligibility"/>
    /// allows and neither <paramref name="path"/> nor PEFTSHARP_DECODE=torch says otherwise, each new token runs
    /// through the C# batch-1 step (<see cref="FastDecoder"/>, the prefill's cache copied in once), else through the
    /// libtorch forward. <paramref name="explain"/> receives one line naming the path taken and why.
    /// </summary>
    internal static IEnumerable<int> Generate(CausalLM model, IReadOnlyList<int> prompt, SamplingOptions options, IReadOnlyCollection<int> stopIds,
        DecodePath path, Action<string>? explain = null)
    {
        if (prompt.Count == 0) throw new ArgumentException("the prompt encodes to zero tokens");
        string? whyNot = path == DecodePath.Torch ? "asked for" : FastDecodeEligibility.ForcedOff ? $"{FastDecodeEligibility.EnvironmentVariable}=torch"
            : options.MaxNewTokens <= 1 ? "one token (the prefill gives it)" : FastDecodeEligibility.WhyNot(model, (long)prompt.Count + options.MaxNewTokens);
        int fastThreads = whyNot is null ? Math.Max(1, get_num_threads()) : 0;
        explain?.Invoke(whyNot is null ? $"decode: C# batch-1 step ({fastThreads} threads, {FastKernel()})" : $"decode: libtorch forward ({whyNot})");
        var sampler = new TokenSampler(options, prompt);
        using var cache = new KvCache(model.Config.NumLayers);
        FastDecoder? fast = null;
        var sequence = prompt.ToList();
        int next = -1;
        try
        {
            for (int step = 0; step < options.MaxNewTokens; step++)
            {
                if (fast is not null) next = sampler.Next(fast.Step(next));
                else
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
                    if (fastThreads > 0)
                    {
                        // The prefill's cache moves into the C# step once; every later token runs there.
                        fast = new FastDecoder(model, (int)Math.Min(cache.Length + options.MaxNewTokens, cache.Length + 1024), fastThreads);
                        fast.LoadCache(cache);
                        cache.Clear();
                    }
                }
                sequence.Add(next);
                yield return next;
                if (stopIds.Contains(next)) yield break;
            }
        }
        finally { fast?.Dispose(); }
    }

    static string FastKernel() =>
        System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "AVX-512" : System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated ? "AVX2" : "scalar";

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

/// <summary>How <see cref="TextGenerator"/> decodes after the prefill.</summary>
internal enum DecodePath
{
    /// <summary>The C# batch-1 step where the model allows it, else the libtorch forward.</summary>
    Auto,
    /// <summary>Always the libtorch forward (for comparisons).</summary>
    Torch,
}
