using System.Text.Json.Nodes;
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
        // 9 + 4, the first to end, still stores 3 more (its last generated token is never fed): 12 slots, not the 9 the
        // prompts fill (the next step would grow the cache), nor the 9 + 9 the row of 7 + 10 stores before it ends (the
        // 9 + 4 row leaving rebuilds the cache first).
        batch.Admit(jobs, maxPerForward: 2, maxTokens: long.MaxValue);
        AssertSized(model, batch, jobs, 9, 12);

        // A decode step writes into those buffers: a view of them taken before the step sees a write after it.
        var (keys, _) = batch.Cache!.Stored(0);
        batch.Step();
        keys.FillWith(0.5);
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
        AssertSized(model, batch, jobs, 6, 6 + 2);
        batch.Step();
        var late = new List<GenerationJob> { Job(12, 5) };
        batch.Admit(late, maxPerForward: 8, maxTokens: long.MaxValue);
        jobs.AddRange(late);
        AssertSized(model, batch, jobs, 12, 12 + 1);   // the 6 + 3 row has fed 1 of its 2: 1 left, the fewest
        while (batch.Count > 0)
        {
            batch.Step();
            if (batch.Count > 0) AssertSized(model, batch, jobs);
        }
        Assert.All(jobs, j => Assert.Equal("length", j.FinishReason));
    }

    [Fact]
    public async Task Rows_of_very_different_prompt_lengths_never_make_the_cache_wider_than_the_context()
    {
        // A 110-token prompt with 8 tokens to go and a 5-token one with 100 join one batch (128-token model): the short
        // row is left-padded to the long one's width, and room for its 100 tokens on top of that width was 209 slots
        // per row, past the context that `peft plan --serve`'s max_batch x context counts.
        await using var h = await ServingHarness.Start();
        int context = h.Model.Config.MaxPositionEmbeddings;
        int[] longPrompt = [.. Enumerable.Range(0, 110).Select(i => 3 + i % 200)], shortPrompt = [5, 6, 7, 8, 9];
        long widest = 0, rows = 0;
        var gate = h.HoldWorker();
        h.Server.State.Scheduler.AfterStep = () =>
        {
            if (h.Server.State.Scheduler.RunningCache is not { } cache) return;
            var (k, v) = cache.Stored(0);
            rows = Math.Max(rows, k.shape[0]);
            k.Dispose(); v.Dispose();
            for (int layer = 0; layer < h.Model.Config.NumLayers; layer++) widest = Math.Max(widest, Math.Max(cache.Capacity(layer), cache.Length));
        };
        var requests = new[] { (longPrompt, 8), (shortPrompt, 100) }
            .Select(r => h.Post("v1/completions", new JsonObject { ["prompt"] = new JsonArray([.. r.Item1.Select(i => (JsonNode)i)]), ["max_tokens"] = r.Item2, ["temperature"] = 0 }))
            .ToList();
        await ServingHarness.WaitUntil(() => h.Server.State.Scheduler.QueuedJobs == 2, "both requests queued");
        gate.Release();
        var answers = await Task.WhenAll(requests);
        h.Server.State.Scheduler.AfterStep = null;
        Assert.Equal(2, rows);
        Assert.InRange(widest, 110, context);
        Assert.Equal(ServingHarness.Reference(null, longPrompt, 8), answers[0].Body["choices"]![0]!["text"]!.GetValue<string>());
        Assert.Equal(ServingHarness.Reference(null, shortPrompt, 100), answers[1].Body["choices"]![0]!["text"]!.GetValue<string>());
    }

    /// <summary>Every layer holds room for exactly the slots the live rows fill until the first of them ends: the cache's
    /// length (the longest row, the rest left-padded) plus the fewest tokens any row will still feed (max_tokens -
    /// generated).</summary>
    static void AssertSized(CausalLM model, RunningBatch batch, List<GenerationJob> jobs, long? length = null, long? capacity = null)
    {
        var cache = batch.Cache!;
        var live = jobs.Where(j => j.FinishReason is null).ToList();
        Assert.Equal(live.Max(j => j.Prompt.Count + j.Generated - 1), cache.Length);
        long expected = cache.Length + live.Min(j => j.Options.MaxNewTokens - j.Generated);
        if (length is { } l) Assert.Equal(l, cache.Length);
        if (capacity is { } c) Assert.Equal(c, expected);
        for (int layer = 0; layer < model.Config.NumLayers; layer++) Assert.Equal(expected, cache.Capacity(layer));
    }
}
