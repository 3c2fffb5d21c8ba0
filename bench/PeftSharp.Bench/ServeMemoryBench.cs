using System.Net.Http.Json;
using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Memory;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;
using PeftSharp.Training;

namespace PeftSharp.Bench;

/// <summary>
/// serve-memory: `peft serve`'s peak resident memory at a given load beside `peft plan --serve`'s figure for it. A random
/// Llama-shaped fp32 base (GQA) and --adapters random LoRA adapters (all-linear, --rank) are served in this process;
/// --batch clients each send one greedy completion of --prompt token ids and --max-tokens new tokens at once, so the KV
/// cache holds batch x (prompt + max-tokens) tokens at the end. Run once per process (VmHWM is the process peak);
/// bench/serve-vs-plan.sh drives it. Prints one JSON line: planned, measured, the plan's parts and the allocator that
/// ran: `peft serve`'s by default (BenchAllocator: the buffer cache; PEFTSHARP_TENSOR_CACHE=0 glibc's fixed mmap
/// threshold alone), `--allocator glibc` glibc's default heap, where freed KV-cache blocks stay in glibc's heaps.
/// `--score`: every request scores its prompt too (`echo` + `logprobs` 1, as lm-evaluation-harness asks), so each
/// prefill keeps every position's logits: the plan's <see cref="ServePlan.ScoringBytes"/> at work.
/// </summary>
public sealed class ServeMemoryBench : IBench
{
    public string Name => "serve-memory";
    public string Description => "peak RSS of serve at a load vs plan --serve (--hidden --layers --heads --kv-heads --intermediate --vocab --batch --prompt --max-tokens --adapters --rank --max-prefill-tokens --max-prefill-batch --score)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int hidden = a.Int("hidden", 768), layers = a.Int("layers", 12), heads = a.Int("heads", 12), kvHeads = a.Int("kv-heads", 4);
        int inter = a.Int("intermediate", 2048), vocab = a.Int("vocab", 8192), batch = a.Int("batch", 16), prompt = a.Int("prompt", 448);
        int maxTokens = a.Int("max-tokens", 64), adapters = a.Int("adapters", 8), rank = a.Int("rank", 8);
        bool score = a.Flag("score");
        // As `peft serve` / `peft plan --serve` (--max-prefill-batch: requests per prefill forward, default 8).
        int prefillTokens = a.Int("max-prefill-tokens", ServeRequest.DefaultMaxPrefillTokens), prefillBatch = a.Int("max-prefill-batch", 8);
        TorchSharp.torch.set_num_threads(a.Int("threads", 1));
        string allocator = BenchAllocator.Apply(a);   // before the first tensor, as peft serve installs it
        using (TorchSharp.torch.zeros(1)) { }
        long runtime = ProcessMemory.Read().RssBytes;
        string dir = Path.Combine(Path.GetTempPath(), "peftsharp-serve-memory-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            var config = BenchModels.Config(vocab, hidden, layers, heads, kvHeads, inter);
            using var model = BenchModels.Random(config, 1);
            long afterModel = ProcessMemory.Read().RssBytes;
            ServeLoadBench.WordTokenizer(Path.Combine(dir, "tokenizer.json"), vocab);
            using var tok = new PeftSharp.Models.TextTokenizer(Path.Combine(dir, "tokenizer.json"));
            var folders = Enumerable.Range(0, adapters).Select(i => ServeLoadBench.SaveAdapter(model, Path.Combine(dir, $"a{i}"), i, rank)).ToList();
            // The cache's idle blocks from writing the adapters would be taken off the peak below and then reused by the
            // server: given back first, as peft serve gives back what loading freed.
            PeftSharp.Native.TensorAllocator.ReleaseIdle();
            long afterAdapters = ProcessMemory.Read().RssBytes;
            var options = new ServerOptions
            {
                Host = "127.0.0.1", Port = 0, MaxBatch = batch, MaxQueue = batch, MaxAdapters = Math.Max(1, adapters),
                MaxPrefillTokens = prefillTokens, MaxPrefillBatch = prefillBatch,
                Adapters = folders.Select((d, i) => ($"a{i}", d)).ToList(),
            };
            var clock = System.Diagnostics.Stopwatch.StartNew();
            RunLoad(model, tok, options, batch, prompt, maxTokens, adapters, score).GetAwaiter().GetResult();
            double seconds = clock.Elapsed.TotalSeconds; // the whole load: prefill of every prompt, then batched decoding
            // The server is gone (its KV cache with it) and idle buffers are given back: what stays beyond the weights and
            // adapters is the runtime's own growth while serving (managed heap, native arenas), which no plan term names.
            PeftSharp.Native.TensorAllocator.ReleaseIdle();
            long afterLoad = ProcessMemory.Read().RssBytes;
            // What the bench itself left resident while writing the adapters (injecting, saving, deleting them in the base)
            // is not the server's: `peft serve` loads them from disk. It is taken off the peak.
            long setupResidue = afterAdapters - afterModel;
            long peak = ProcessMemory.Read().PeakRssBytes;
            long measured = peak - setupResidue;

            var shape = ModelShape.FromConfig(new PeftSharp.Memory.ModelConfig
            {
                ModelType = "llama", HiddenSize = hidden, IntermediateSize = inter, NumHiddenLayers = layers,
                NumAttentionHeads = heads, NumKeyValueHeads = kvHeads, VocabSize = vocab,
            }, "bench");
            var plan = ServePlanner.Plan(shape, new ServeRequest
            {
                MaxBatch = batch, Context = prompt + maxTokens, Adapters = adapters, MaxRank = rank, Targets = TargetMatcher.AllLinear(),
                WeightDtype = DType.Fp32, Device = DeviceKind.Cpu, MaxPrefillTokens = prefillTokens,
            });
            Console.WriteLine(new JsonObject
            {
                ["batch"] = batch, ["context"] = prompt + maxTokens, ["adapters"] = adapters, ["params"] = shape.TotalParameters,
                ["planned"] = plan.TotalBytes, ["measured"] = measured, ["rss_runtime"] = runtime, ["rss_after_model"] = afterModel,
                ["rss_after_adapters"] = afterAdapters, ["rss_after_load"] = afterLoad, ["peak_rss"] = peak, ["error"] = Math.Round((plan.TotalBytes - (double)measured) / measured, 4), ["weights"] = plan.WeightsBytes, ["kv_cache"] = plan.KvCacheBytes, ["kv_growth"] = plan.KvGrowthBytes,
                ["adapters_bytes"] = plan.AdaptersBytes, ["prefill"] = plan.PrefillBytes, ["scoring"] = plan.ScoringBytes, ["scored"] = score, ["prefill_tokens"] = plan.Request.ResolvedPrefillTokens,
                ["max_prefill_tokens"] = prefillTokens, ["max_prefill_batch"] = prefillBatch, ["overhead"] = plan.FrameworkOverheadBytes,
                ["seconds"] = Math.Round(seconds, 2), ["generated_tokens_per_s"] = Math.Round(batch * maxTokens / seconds, 2),
                ["allocator"] = allocator,
                ["cache"] = PeftSharp.Native.TensorAllocator.Cached ? PeftSharp.Native.TensorBlockCache.Summary() : null,
            }.ToJsonString());
            return 0;
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    static async Task RunLoad(PeftSharp.Models.CausalLM model, PeftSharp.Models.TextTokenizer tok, ServerOptions options, int batch, int prompt, int maxTokens, int adapters, bool score)
    {
        await using var server = await PeftServer.StartAsync(model, tok, "base", options, new PeftAdapterLoader());
        PeftSharp.Native.TensorAllocator.ReleaseIdle();   // as peft serve, once the adapters are loaded
        using var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromMinutes(20) };
        var rng = new Random(3);
        var bodies = Enumerable.Range(0, batch).Select(i => new JsonObject
        {
            ["model"] = adapters > 0 ? $"a{i % adapters}" : "base",
            ["prompt"] = new JsonArray(Enumerable.Range(0, prompt).Select(_ => (JsonNode)rng.Next(model.Config.VocabSize)).ToArray()),
            ["max_tokens"] = maxTokens, ["temperature"] = 0,
        }).ToList();
        if (score) foreach (var body in bodies) { body["echo"] = true; body["logprobs"] = 1; }
        await Task.WhenAll(bodies.Select(async body =>
        {
            using var resp = await http.PostAsJsonAsync("v1/completions", body);
            if (!resp.IsSuccessStatusCode) throw new InvalidOperationException($"HTTP {(int)resp.StatusCode}: {await resp.Content.ReadAsStringAsync()}");
        }));
    }
}
