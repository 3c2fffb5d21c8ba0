using PeftSharp.Generation;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>
/// The sampler's distribution, not literal ids: top_k = 1 and a tiny top_p are greedy; draws follow softmax(l / T)
/// restricted and renormalised by top-k / top-p; HF's repetition penalty changes the logits of seen ids.
/// </summary>
public class SamplingTests
{
    static readonly float[] Logits = [1.0f, 3.0f, 0.5f, 2.5f, -1f, 2.0f];

    static double[] Frequencies(SamplingOptions o, int draws = 20000)
    {
        var s = new TokenSampler(o);
        var counts = new double[Logits.Length];
        for (int i = 0; i < draws; i++) counts[s.Sample(Logits)]++;
        return counts.Select(c => c / draws).ToArray();
    }

    static double[] Softmax(float[] l, double t, int[] keep)
    {
        var e = l.Select((x, i) => keep.Contains(i) ? Math.Exp(x / t) : 0).ToArray();
        return e.Select(x => x / e.Sum()).ToArray();
    }

    static void Near(double[] expected, double[] got)
    {
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - got[i]) < 0.015, $"id {i}: {got[i]:F4} vs {expected[i]:F4}");
    }

    /// <summary>
    /// transformers' GenerationConfig defaults top_k to 50, so HF's generate samples among the 50 most likely tokens when
    /// neither the request nor generation_config.json names top_k. The tiny fixture has 260 ids and random weights (a wide
    /// distribution), so top_k 50 and no top_k draw differently for some seed.
    /// </summary>
    [Fact]
    public void SamplingWithoutTopKIsTopK50AsInHf()
    {
        using var model = PeftModel.FromPretrained(TestPaths.TinyLlama);
        string Text(int seed, int? topK) => model.Generate("a prompt", 24, topK is int k
            ? new GenerationOptions { Temperature = 1.5, Seed = seed, TopK = k }
            : new GenerationOptions { Temperature = 1.5, Seed = seed });
        bool differsFromUnfiltered = false;
        foreach (int seed in new[] { 1, 2, 3 })
        {
            Assert.Equal(Text(seed, 50), Text(seed, null));
            differsFromUnfiltered |= Text(seed, 0) != Text(seed, null);
        }
        Assert.True(differsFromUnfiltered, "top_k 0 and the default drew the same: the check cannot tell them apart");
        Assert.Equal(50, new SamplingOptions().TopK);   // the CLI and serve start from these defaults (then generation_config.json)
    }

    [Fact]
    public void TopKOneAndTinyTopPAreGreedy()
    {
        var rng = new Random(3);
        for (int n = 0; n < 50; n++)
        {
            var l = Enumerable.Range(0, 1000).Select(_ => (float)(rng.NextDouble() * 10)).ToArray();
            int best = Array.IndexOf(l, l.Max());
            Assert.Equal(best, new TokenSampler(new SamplingOptions { Temperature = 1.5, TopK = 1, Seed = n }).Sample(l));
            Assert.Equal(best, new TokenSampler(new SamplingOptions { Temperature = 1.5, TopP = 1e-9, Seed = n }).Sample(l));
        }
    }

    [Fact]
    public void WithoutFiltersDrawsFollowTheSoftmax() =>
        Near(Softmax(Logits, 0.7, [0, 1, 2, 3, 4, 5]), Frequencies(new SamplingOptions { Temperature = 0.7, Seed = 1 }));

    [Fact]
    public void TopKKeepsTheKMostLikelyRenormalised() =>
        Near(Softmax(Logits, 1, [1, 3, 5]), Frequencies(new SamplingOptions { Temperature = 1, TopK = 3, Seed = 2 }));

    [Fact]
    public void TopPKeepsTheSmallestSetReachingTheMass()
    {
        var p = Softmax(Logits, 1, [0, 1, 2, 3, 4, 5]);   // ids by probability: 1, 3, 5, 0, 2, 4
        double top2 = p[1] + p[3];
        // top_p just above the two most likely: the third joins; top_p at or below: only two.
        Near(Softmax(Logits, 1, [1, 3, 5]), Frequencies(new SamplingOptions { Temperature = 1, TopP = top2 + 1e-3, Seed = 3 }));
        Near(Softmax(Logits, 1, [1, 3]), Frequencies(new SamplingOptions { Temperature = 1, TopP = top2 - 1e-3, Seed = 4 }));
        // top-k then top-p over what top-k kept (HF's order of warpers).
        Near(Softmax(Logits, 1, [1, 3]), Frequencies(new SamplingOptions { Temperature = 1, TopK = 3, TopP = 0.8, Seed = 5 }));
    }

    [Fact]
    public void RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOfSeenIds()
    {
        // HF's RepetitionPenaltyLogitsProcessor with penalty 2 over seen ids {0, 1}: [2, -2, 1.5] -> [1, -4, 1.5].
        using var logits = tensor(new float[] { 2f, -2f, 1.5f });
        Assert.Equal(0, new TokenSampler(new SamplingOptions { Temperature = 0 }, [0, 1]).Next(logits));
        Assert.Equal(2, new TokenSampler(new SamplingOptions { Temperature = 0, RepetitionPenalty = 2 }, [0, 1]).Next(logits));
        // Generated ids count as seen too: after picking 2 once, its logit 1.5 -> 0.75 and 0 (2 -> 1) wins.
        var s = new TokenSampler(new SamplingOptions { Temperature = 0, RepetitionPenalty = 2 }, [0]);
        Assert.Equal(2, s.Next(logits));
        Assert.Equal(0, s.Next(logits));
    }
}
