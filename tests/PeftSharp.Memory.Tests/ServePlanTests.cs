using PeftSharp.Memory;

namespace PeftSharp.Memory.Tests;

public class ServePlanTests
{
    [Fact]
    public void Kv_cache_is_gqa_aware_per_token_and_scales_with_batch_and_context()
    {
        // llama-3.1-8b: 32 layers, 8 kv heads x 128 = 1024 wide: 2 x 32 x 1024 x 2 B = 128 KiB per token in bf16.
        var plan = ServePlanner.Plan("llama-3.1-8b", new ServeRequest { MaxBatch = 16, Context = 4096 });
        Assert.Equal(131_072, plan.KvBytesPerToken);
        Assert.Equal(131_072L * 16 * 4096, plan.KvCacheBytes);
        var fp32 = ServePlanner.Plan("llama-3.1-8b", new ServeRequest { MaxBatch = 16, Context = 4096, KvDtype = DType.Fp32 });
        Assert.Equal(2 * plan.KvCacheBytes, fp32.KvCacheBytes);
        // Multi-head models pay per head: llama-2-7b keeps 32 x 128 per layer = 512 KiB per token.
        Assert.Equal(524_288, ServePlanner.Plan("llama-2-7b", new ServeRequest()).KvBytesPerToken);
    }

    static string Published(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "published-configs", name, "config.json");

    [Fact]
    public void A_sliding_window_layer_caches_its_window_not_the_context()
    {
        // gemma-2-2b's config.json: 26 layers, 4 kv heads x 256 (2 x 1024 x 2 B = 4096 B per token and layer in bf16),
        // sliding_window 4096 on the 13 even layers. At 8192 tokens: 13 x 4096 + 13 x 8192 slots per sequence.
        var gemma = ServePlanner.Plan(Published("gemma-2-2b"), new ServeRequest { MaxBatch = 4, Context = 8192 });
        Assert.Equal(4096, gemma.KvBytesPerTokenPerLayer);
        Assert.Equal(13L * (4096 + 8192) * 4096, gemma.KvBytesPerSequence);
        Assert.Equal(4 * gemma.KvBytesPerSequence, gemma.KvCacheBytes);
        Assert.Equal(4L * 8192 * 4096, gemma.KvGrowthBytes);   // the rebuild copies one global layer
        Assert.Equal(gemma.TotalBytes, ServePlanner.Plan("gemma-2-2b", new ServeRequest { MaxBatch = 4, Context = 8192 }).TotalBytes);   // the preset agrees
        // Within the window every layer holds the context.
        Assert.Equal(26L * 2048 * 4096, ServePlanner.Plan(Published("gemma-2-2b"), new ServeRequest { Context = 2048 }).KvBytesPerSequence);

        // phi-3-mini-4k-instruct: sliding_window 2047 on all 32 layers, 32 kv heads x 96 (12288 B per token and layer):
        // its 4096-token context caches 2047 slots per layer, and the rebuild copies 2047 per row.
        var phi = ServePlanner.Plan(Published("phi-3-mini-4k-instruct"), new ServeRequest { MaxBatch = 2, Context = 4096 });
        Assert.Equal(32L * 2047 * 12288, phi.KvBytesPerSequence);
        Assert.Equal(2L * 2047 * 12288, phi.KvGrowthBytes);
        // More sequences fit than at the full context per layer.
        Assert.True(phi.ConcurrentSequences(24L << 30) > ServePlanner.Plan("phi-3-mini", new ServeRequest { MaxBatch = 2, Context = 4096 }).ConcurrentSequences(24L << 30));
    }

    [Fact]
    public void Adapters_weights_and_prefill_follow_the_request()
    {
        var one = ServePlanner.Plan("llama-3.1-8b", new ServeRequest { Adapters = 1, MaxRank = 16 });
        // PEFT's default targets q_proj, v_proj: 16 x ((4096 + 4096) + (4096 + 1024)) x 32 layers, bf16.
        Assert.Equal(2L * 16 * (8192 + 5120) * 32, one.AdapterBytesEach);
        var many = ServePlanner.Plan("llama-3.1-8b", new ServeRequest { Adapters = 64, MaxRank = 16 });
        Assert.Equal(64 * one.AdapterBytesEach, many.AdaptersBytes);
        var nf4 = ServePlanner.Plan("llama-3.1-8b", new ServeRequest { WeightDtype = DType.Nf4 });
        Assert.True(nf4.WeightsBytes < one.WeightsBytes / 2);
        var chunked = ServePlanner.Plan("llama-3.1-8b", new ServeRequest { PrefillChunk = 512, MaxPrefillTokens = 512 });
        Assert.True(chunked.PrefillBytes < one.PrefillBytes);
    }

    [Fact]
    public void Prefill_counts_the_batched_forward_budget_or_one_whole_prompt()
    {
        Plan Of(int budget, int context = 1024, int batch = 32) => new(ServePlanner.Plan("llama-3.1-8b",
            new ServeRequest { Context = context, MaxBatch = batch, MaxPrefillTokens = budget }));
        // Activations grow with the budget's tokens (one layer's working set per token); the rows they prefill are among
        // max_batch, so their cache is inside the KV cache's and the rebuild transient does not change.
        var (b4k, b8k) = (Of(4096), Of(8192));
        Assert.Equal(4096, b4k.Tokens);
        Assert.Equal(8192, b8k.Tokens);
        Assert.Equal(4096.0 / 3072, (double)(b8k.P.PrefillBytes - b4k.P.PrefillBytes) / (b4k.P.PrefillBytes - Of(1024).P.PrefillBytes), 3);
        Assert.Equal(b4k.P.KvGrowthBytes, b8k.P.KvGrowthBytes);
        // A budget under the context: a single prompt is prefilled whole. Over every row's context: capped there.
        Assert.Equal(1024, Of(256).Tokens);
        Assert.Equal(2 * 1024, Of(1 << 20, batch: 2).Tokens);
        Assert.Throws<PlanException>(() => Of(0));
    }

    sealed record Plan(ServePlan P)
    {
        public long Tokens => P.Request.ResolvedPrefillTokens;
    }

    [Fact]
    public void Concurrent_sequences_fill_what_the_fixed_part_leaves()
    {
        var plan = ServePlanner.Plan("llama-3.1-8b", new ServeRequest { Context = 4096 });
        long card = 80L << 30;
        long n = plan.ConcurrentSequences(card);
        var paged = ServePlanner.Plan("llama-3.1-8b", new ServeRequest { Context = 4096, ConcatenatedCache = false });
        long m = paged.ConcurrentSequences(card);
        Assert.Equal((card - paged.FixedBytes) / (paged.KvBytesPerToken * 4096), m);
        Assert.True(paged.FixedBytes + (m + 1) * paged.KvBytesPerSequence > card);
        // With a rebuilt cache, one layer's copy (1/32 of the rows' cache) or the prefill, whichever is larger, must fit too.
        long Need(long rows) => plan.FixedBytes - plan.PrefillBytes + rows * plan.KvBytesPerSequence + Math.Max(plan.PrefillBytes, rows * plan.KvBytesPerSequence / 32);
        Assert.True(Need(n) <= card);
        Assert.True(Need(n + 1) > card);
        Assert.True(n < m);
        Assert.Equal(0, plan.ConcurrentSequences(plan.FixedBytes - 1));
    }

    [Fact]
    public void The_cache_rebuild_and_the_prefill_never_coincide_so_the_larger_counts()
    {
        // llama-3.1-8b, 32 layers: the rebuild is one layer's copy of the cache (1/32 of it). At 16 x 4096 that is 268 MB,
        // under the 4096-token prefill's working set; at 64 x 4096 it is 1.07 GB, over it. Either way the total is the
        // residents plus the larger transient, never both.
        foreach (int batch in new[] { 16, 64 })
        {
            var grows = ServePlanner.Plan("llama-3.1-8b", new ServeRequest { MaxBatch = batch, Context = 4096 });
            var paged = ServePlanner.Plan("llama-3.1-8b", new ServeRequest { MaxBatch = batch, Context = 4096, ConcatenatedCache = false });
            Assert.Equal(0, paged.KvGrowthBytes);
            Assert.Equal(grows.KvCacheBytes / 32, grows.KvGrowthBytes);
            Assert.Equal(grows.PrefillBytes, paged.PrefillBytes);
            long residents = grows.WeightsBytes + grows.AdaptersBytes + grows.FrameworkOverheadBytes + grows.KvCacheBytes;
            Assert.Equal(residents + Math.Max(grows.PrefillBytes, grows.KvGrowthBytes), grows.TotalBytes);
            Assert.Equal(residents + paged.PrefillBytes, paged.TotalBytes);
            Assert.True(paged.ConcurrentSequences(80L << 30) >= grows.ConcurrentSequences(80L << 30));
        }
        var small = ServePlanner.Plan("llama-3.1-8b", new ServeRequest { MaxBatch = 16, Context = 4096 });
        var large = ServePlanner.Plan("llama-3.1-8b", new ServeRequest { MaxBatch = 64, Context = 4096 });
        Assert.True(small.PrefillBytes > small.KvGrowthBytes && small.TransientBytes == small.PrefillBytes);
        Assert.True(large.KvGrowthBytes > large.PrefillBytes && large.TransientBytes == large.KvGrowthBytes);
    }

    [Fact]
    public void A_scored_prompt_keeps_every_position_logits_and_counts_where_it_is_the_largest_transient()
    {
        // qwen2.5-0.5b (h 896, 2 kv heads x 64 of 14 heads, i 4864, V 151936, bf16): one row of 512 tokens prefills
        // ~19 MB, but scoring a prompt (echo + logprobs) keeps each position's logits: 64 MiB of fp32 logits is 110 rows
        // of 151936, held in bf16, copied to fp32 and log-softmaxed (10 bytes a logit), ~167 MB. The server accepts
        // such a request at any load, so it is the transient the total counts.
        var p = ServePlanner.Plan("qwen2.5-0.5b", new ServeRequest { MaxBatch = 1, Context = 512, Adapters = 0 });
        const long rows = (64L << 20) / (4 * 151936);
        Assert.Equal(110, rows);
        long layer = (long)Math.Ceiling(rows * (4.0 * 896 + 2 * 128 + 3 * 4864) * 2) + rows * 2 * 14 * 64 * 2;
        Assert.Equal(layer + rows * 151936 * (2 + 4 + 4), p.ScoringBytes);
        Assert.True(p.ScoringBytes > p.PrefillBytes && p.ScoringBytes > p.KvGrowthBytes);
        Assert.Equal(p.WeightsBytes + p.AdaptersBytes + p.FrameworkOverheadBytes + p.KvCacheBytes + p.ScoringBytes, p.TotalBytes);
        // fp32 compute: the logits are fp32 already, no copy (8 bytes a logit).
        var fp32 = ServePlanner.Plan("qwen2.5-0.5b", new ServeRequest { MaxBatch = 1, Context = 512, Adapters = 0, WeightDtype = DType.Fp32 });
        Assert.Equal(2 * layer + rows * 151936 * 8, fp32.ScoringBytes);
        // A context shorter than the chunk scores at most the context.
        var shortContext = ServePlanner.Plan("qwen2.5-0.5b", new ServeRequest { MaxBatch = 1, Context = 16, Adapters = 0 });
        Assert.Equal(layer * 16 / rows + 16L * 151936 * 10, shortContext.ScoringBytes);
    }

    [Fact]
    public void Gqa_prefill_counts_its_keys_and_values_repeated_to_every_query_head_and_decode_repeats_nothing()
    {
        // llama-3.1-8b: 32 query heads x 128 over 8 kv heads, h 4096, i 14336, V 128256, bf16. The largest prefill
        // forward is one 4096-token prompt (longer than the 2048-token budget, it goes alone); it repeats its keys and
        // values to every head (2 x 4096 per token). Decode reads the cache in place (grouped queries), so the total is
        // weights, cache, adapters, overhead and the larger of prefill and the cache's rebuild alone.
        const long chunk = 4096;
        var gqa = ServePlanner.Plan("llama-3.1-8b", new ServeRequest { MaxBatch = 16, Context = 4096 });
        Assert.Equal(chunk * (4 * 4096 + 2 * 1024 + 3 * 14336) * 2 + chunk * 2 * 4096 * 2 + 4L * 16 * 128256, gqa.PrefillBytes);
        Assert.Equal(gqa.WeightsBytes + gqa.AdaptersBytes + gqa.FrameworkOverheadBytes + gqa.KvCacheBytes + Math.Max(gqa.PrefillBytes, gqa.KvGrowthBytes), gqa.TotalBytes);
        // Multi-head attention repeats nothing: llama-2-7b (h 4096, 32 kv heads, i 11008, V 32000).
        var mha = ServePlanner.Plan("llama-2-7b", new ServeRequest { MaxBatch = 16, Context = 4096 });
        Assert.Equal(chunk * (4 * 4096 + 2 * 4096 + 3 * 11008) * 2 + 4L * 16 * 32000, mha.PrefillBytes);
    }

    [Theory]
    [InlineData("max_batch")]
    [InlineData("context")]
    [InlineData("kv_dtype")]
    public void Bad_requests_name_the_field(string field)
    {
        var r = field switch
        {
            "max_batch" => new ServeRequest { MaxBatch = 0 },
            "context" => new ServeRequest { Context = -1 },
            _ => new ServeRequest { KvDtype = DType.Nf4 },
        };
        Assert.Equal(field, Assert.Throws<PlanException>(() => ServePlanner.Plan("llama-3.1-8b", r)).Field);
    }
}
