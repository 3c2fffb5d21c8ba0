using PeftSharp.Generation;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

public class GenerationTests
{
    static readonly int[] Prompt = [5, 77, 120, 3, 9];

    [Fact]
    public void KvCacheGreedyEqualsRecomputation()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var o = new SamplingOptions { MaxNewTokens = 24 };
        var cached = TextGenerator.Generate(model, Prompt, o, []).ToList();
        var full = TextGenerator.GenerateWithoutCache(model, Prompt, o, []);
        Assert.Equal(24, cached.Count);
        Assert.Equal(full, cached);
    }

    /// <summary>
    /// 70 cached greedy tokens after a 5-token prompt grow the KV cache's in-place buffers several times (prefill
    /// leaves 16 spare slots, then each growth adds half): the ids equal recomputation without a cache.
    /// </summary>
    [Fact]
    public void KvCacheGrowingPastItsBuffersEqualsRecomputation()
    {
        using var model = ModelLoader.Load(RandomModel.Write(RandomModel.LlamaConfig(hidden: 64, intermediate: 128, vocab: 300)));
        var o = new SamplingOptions { MaxNewTokens = 70 };
        var cached = TextGenerator.Generate(model, Prompt, o, []).ToList();
        Assert.Equal(70, cached.Count);
        Assert.Equal(TextGenerator.GenerateWithoutCache(model, Prompt, o, []), cached);
    }

    [Fact]
    public void KvCacheSampledWithSeedEqualsRecomputation()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var o = new SamplingOptions { MaxNewTokens = 24, Temperature = 0.9, TopP = 0.9, Seed = 7 };
        var cached = TextGenerator.Generate(model, Prompt, o, []).ToList();
        Assert.Equal(TextGenerator.GenerateWithoutCache(model, Prompt, o, []), cached);
        Assert.Equal(cached, TextGenerator.Generate(model, Prompt, o, []).ToList()); // same seed, same tokens
    }

    /// <summary>
    /// The tiny fixture has 4 query heads on 2 key/value heads: a decode step reads the cache per key/value head, its
    /// group of queries together (Models/Attention), instead of repeating the cache to every head. A left-padded batch's
    /// decode logits over three steps equal each row's full forward without a cache.
    /// </summary>
    [Fact]
    public void GroupedQueryDecodeOnALeftPaddedBatchEqualsFullForwards()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        Assert.True(model.Config.NumKvHeads < model.Config.NumHeads);
        using var _ = no_grad();
        long[][] rows = [[5, 77, 120, 3, 9], [44, 12]];
        long[][] next = [[31, 8, 99], [7, 60, 2]];
        using var cache = new KvCache(model.Config.NumLayers);
        using (var ids = tensor(new long[] { 5, 77, 120, 3, 9, 0, 0, 0, 44, 12 }).view(2, 5))
        using (var mask = tensor(new long[] { 1, 1, 1, 1, 1, 0, 0, 0, 1, 1 }).view(2, 5))
            model.Forward(ids, cache, mask).Dispose();
        var valid = new List<long> { 1, 1, 1, 1, 1, 0, 0, 0, 1, 1 };
        for (int step = 0; step < 3; step++)
        {
            valid.Insert(valid.Count / 2, 1); valid.Add(1);
            using var ids = tensor(new long[] { next[0][step], next[1][step] }).view(2, 1);
            using var mask = tensor(valid.ToArray()).view(2, valid.Count / 2);
            using var decoded = model.Forward(ids, cache, mask);
            for (int r = 0; r < 2; r++)
            {
                using var full = model.Forward(tensor(rows[r].Concat(next[r].Take(step + 1)).ToArray()).unsqueeze(0));
                Assert.True(TestPaths.RelativeError(decoded[r, 0], full[0, -1]) < 1e-5, $"step {step} row {r}");
            }
        }
    }

    [Fact]
    public void StopsAtEos()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        var greedy = TextGenerator.Generate(model, Prompt, new SamplingOptions { MaxNewTokens = 10 }, []).ToList();
        int stop = greedy[3];
        var stopped = TextGenerator.Generate(model, Prompt, new SamplingOptions { MaxNewTokens = 10 }, [stop]).ToList();
        Assert.Equal(greedy.Take(greedy.IndexOf(stop) + 1), stopped);
    }

    [Fact]
    public void LeftPaddedBatchEqualsRowsAlone()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        using var _ = no_grad();
        long[] a = [5, 77, 120, 3, 9], b = [44, 12];
        using var alone = model.Forward(tensor(a).unsqueeze(0));
        using var aloneB = model.Forward(tensor(b).unsqueeze(0));
        using var ids = tensor(new long[] { 5, 77, 120, 3, 9, 0, 0, 0, 44, 12 }).view(2, 5);
        using var mask = tensor(new long[] { 1, 1, 1, 1, 1, 0, 0, 0, 1, 1 }).view(2, 5);
        using var batch = model.Forward(ids, attentionMask: mask);
        Assert.True(TestPaths.RelativeError(batch[0], alone[0]) < 1e-5);
        Assert.True(TestPaths.RelativeError(batch[1].narrow(0, 3, 2), aloneB[0]) < 1e-5);
    }

    [Fact]
    public void TopPOneKeepsEveryTokenAndTinyTopPIsGreedy()
    {
        var logits = new float[] { 0.1f, 3f, 0.2f, 2.9f };
        var nucleus = new TokenSampler(new SamplingOptions { Temperature = 1, TopP = 1e-6, Seed = 1 });
        for (int i = 0; i < 20; i++) Assert.Equal(1, nucleus.Sample(logits));
        var full = new TokenSampler(new SamplingOptions { Temperature = 1, TopP = 1, Seed = 1 });
        var seen = Enumerable.Range(0, 400).Select(_ => full.Sample(logits)).ToHashSet();
        Assert.Contains(3, seen);
        Assert.Contains(0, seen);
    }
}
