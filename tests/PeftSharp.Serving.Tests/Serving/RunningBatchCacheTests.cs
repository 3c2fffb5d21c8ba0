using PeftSharp.Generation;
using PeftSharp.Models;
using PeftSharp.Serving.Scheduling;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// The running batch's cache through the scheduler's own calls (Admit, Step): joining rows are copied in once, into
/// buffers with the slots every row can still fill, so decode steps write in place instead of growing the cache (one
/// more copy of it), and rows leaving leave it sized the same way.
/// </summary>
public class RunningBatchCacheTests
{
    static GenerationJob Job(int prompt, int maxTokens) =>
        new(Enumerable.Range(3, prompt).ToArray(), new SamplingOptions { MaxNewTokens = maxTokens }, [], null, CancellationToken.None);

    [Fact]
    public void Joined_rows_get_the_slots_they_will_fill_and_decode_writes_in_place()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama, new LoadOptions());
        using var batch = new RunningBatch(model);
        var jobs = new List<GenerationJob> { Job(5, 6), Job(7, 10), Job(9, 4) };
        // Two prefill forwards (two rows at most per forward), joined once: the longest prompt is 9 slots, and the row of
        // 7 + 10 still stores 9 more (its last generated token is never fed): 18 slots, not the 9 the prompts fill.
        batch.Admit(jobs, maxPerForward: 2, maxTokens: long.MaxValue);
        AssertSized(model, batch, jobs, 9, 18);

        // A decode step writes into those buffers: a view of them taken before the step sees a write after it.
        var (keys, _) = batch.Cache!.Stored(0);
        batch.Step();
        keys.fill_(0.5f);
        var (after, _) = batch.Cache!.Stored(0);
        Assert.Equal(0.5f, after[0, 0, 0, 0].item<float>());
        keys.Dispose(); after.Dispose();
    }

    [Fact]
    public void Rows_joining_a_running_batch_and_leaving_it_keep_the_cache_at_the_slots_rows_will_fill()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama, new LoadOptions());
        using var batch = new RunningBatch(model);
        var jobs = new List<GenerationJob> { Job(6, 3), Job(4, 8) };
        batch.Admit(jobs, maxPerForward: 8, maxTokens: long.MaxValue);
        AssertSized(model, batch, jobs, 6, 6 + 7);
        batch.Step();
        var late = new List<GenerationJob> { Job(12, 5) };
        batch.Admit(late, maxPerForward: 8, maxTokens: long.MaxValue);
        jobs.AddRange(late);
        AssertSized(model, batch, jobs, 12, 12 + 6);   // the 4 + 8 row has fed 1 of its 7: 6 left beside the new row's 4
        while (batch.Count > 0)
        {
            batch.Step();
            if (batch.Count > 0) AssertSized(model, batch, jobs);
        }
        Assert.All(jobs, j => Assert.Equal("length", j.FinishReason));
    }

    /// <summary>Every layer holds room for exactly the slots the live rows can still fill: the cache's length (the
    /// longest row, the rest left-padded) plus the most tokens any row will still feed (max_tokens - generated).</summary>
    static void AssertSized(CausalLM model, RunningBatch batch, List<GenerationJob> jobs, long? length = null, long? capacity = null)
    {
        var cache = batch.Cache!;
        var live = jobs.Where(j => j.FinishReason is null).ToList();
        Assert.Equal(live.Max(j => j.Prompt.Count + j.Generated - 1), cache.Length);
        long expected = cache.Length + live.Max(j => j.Options.MaxNewTokens - j.Generated);
        if (length is { } l) Assert.Equal(l, cache.Length);
        if (capacity is { } c) Assert.Equal(c, expected);
        for (int layer = 0; layer < model.Config.NumLayers; layer++) Assert.Equal(expected, cache.Capacity(layer));
    }
}
