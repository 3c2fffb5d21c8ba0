using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Serving.Adapters;
using PeftSharp.Serving.Hosting;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Bench;

/// <summary>
/// serve-load: a bounded closed-loop load generator against `peft serve` on loopback. A random ~14M-parameter
/// Llama-shaped base and random LoRA adapters (r=8, all-linear, saved as PEFT folders with fingerprints) in a temp dir;
/// each workload sends the same number of requests (random 16-48 token prompts, greedy, fixed max_tokens) from
/// --concurrency clients, the adapter of each drawn from a Zipf(s) popularity over 1, 8 or 32 adapters.
/// Reports completion tokens/s and p50/p99 latency, heterogeneous vs single-adapter and batched vs --max-batch 1.
/// Then a concurrency sweep over streamed requests (1, 8, 32 clients, 8 adapters): time to first token and
/// tokens/s with batched prefill (the default: up to 8 waiting requests per forward; and all waiting requests in one
/// forward) against each waiting request prefilled alone (--max-prefill-batch 1, the scheduler before batched
/// prefill), interleaved in the same rounds.
/// Options: --requests 48 --concurrency 16 --max-tokens 16 --zipf 1.1 --seed 1 --rounds 3 (median round reported) --threads 1 (torch intra-op threads)
/// </summary>
public sealed class ServeLoadBench : IBench
{
    public string Name => "serve-load";
    public string Description => "HTTP serving throughput/latency with 1, 8, 32 adapters (Zipf) vs single-adapter and sequential";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int requests = a.Int("requests", 48), concurrency = a.Int("concurrency", 16), maxTokens = a.Int("max-tokens", 16), seed = a.Int("seed", 1), rounds = a.Int("rounds", 3);
        double zipf = a.Double("zipf", 1.1);
        // One intra-op thread by default: the server's HTTP threads share the cores, and spinning intra-op threads starve
        // them on a small machine (2 threads measured ~3x slower here on a busy 2-core box).
        TorchSharp.torch.set_num_threads(a.Int("threads", 1));
        string dir = Path.Combine(Path.GetTempPath(), "peftsharp-serve-load-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            var config = BenchModels.Config(vocab: 4096, hidden: 384, layers: 6, heads: 6, kvHeads: 6, intermediate: 1024);
            using var model = BenchModels.Random(config, seed);
            WordTokenizer(Path.Combine(dir, "tokenizer.json"), config.VocabSize);
            using var tok = new TextTokenizer(Path.Combine(dir, "tokenizer.json"));
            var adapters = Enumerable.Range(0, 32).Select(i => SaveAdapter(model, Path.Combine(dir, $"a{i}"), i)).ToList();
            Console.WriteLine($"base {model.ParameterCount() / 1e6:F1}M params; {requests} requests x {maxTokens} tokens, {concurrency} clients, Zipf s={zipf}, {rounds} rounds; torch threads {TorchSharp.torch.get_num_threads()}");
            Console.WriteLine($"{"workload",-28} {"tokens/s",9} {"p50 ms",8} {"p99 ms",8}");

            // Workloads are interleaved over rounds so a busy machine's drift hits all alike; the median round is reported.
            var workloads = new (string Name, int Adapters, int MaxBatch)[]
            {
                ("1 adapter, batched", 1, 32), ("8 adapters (Zipf), batched", 8, 32), ("32 adapters (Zipf), batched", 32, 32), ("8 adapters, --max-batch 1", 8, 1),
            };
            var results = workloads.ToDictionary(w => w.Name, _ => new List<(double Tps, double P50, double P99)>());
            RunWorkload(model, tok, adapters.Take(2).ToList(), 32, 8, 8, 4, zipf, seed).GetAwaiter().GetResult();   // warm-up
            for (int r = 0; r < rounds; r++)
                foreach (var w in workloads)
                    results[w.Name].Add(RunWorkload(model, tok, adapters.Take(w.Adapters).ToList(), w.MaxBatch, requests, concurrency, maxTokens, zipf, seed + r).GetAwaiter().GetResult());
            var median = results.ToDictionary(kv => kv.Key, kv => kv.Value.OrderBy(x => x.Tps).ElementAt(kv.Value.Count / 2));
            foreach (var w in workloads)
                Console.WriteLine($"{w.Name,-28} {median[w.Name].Tps,9:F1} {median[w.Name].P50,8:F0} {median[w.Name].P99,8:F0}");
            double single = median[workloads[0].Name].Tps, het8 = median[workloads[1].Name].Tps, het32 = median[workloads[2].Name].Tps, seq = median[workloads[3].Name].Tps;
            Console.WriteLine($"heterogeneous/single-adapter: 8 -> x{het8 / single:F2}, 32 -> x{het32 / single:F2} (target >= 0.8)");
            Console.WriteLine($"batched/sequential (8 adapters): x{het8 / seq:F2} (target >= 2)");
            if (a.Flag("no-sweep")) return 0;
            ConcurrencySweep(model, tok, adapters.Take(8).ToList(), a.Int("sweep-tokens", maxTokens), zipf, seed, rounds);
            return 0;
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    internal static string SaveAdapter(CausalLM model, string folder, int seed, int rank = 8)
    {
        LoraInjector.Inject(model, new LoraConfig { R = rank, LoraAlpha = 2 * rank, TargetModulesRegex = "all-linear", InitLoraWeights = LoraInit.False }, "tmp", seed);
        PeftAdapterIO.Save(model, "tmp", folder);
        LoraModel.Of(model).Delete("tmp");
        return folder;
    }

    static async Task<(double Tps, double P50, double P99)> RunWorkload(CausalLM model, TextTokenizer tok, List<string> adapters, int maxBatch,
        int requests, int concurrency, int maxTokens, double zipf, int seed)
    {
        var options = new ServerOptions { Host = "127.0.0.1", Port = 0, MaxBatch = maxBatch, MaxQueue = requests, Adapters = adapters.Select((d, i) => ($"a{i}", d)).ToList() };
        await using var server = await PeftServer.StartAsync(model, tok, "base", options, new PeftAdapterLoader());
        using var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromMinutes(10) };
        var work = Requests(model, adapters.Count, requests, maxTokens, zipf, seed, stream: false);
        var latencies = new List<double>();
        long tokens = 0;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async _ =>
        {
            while (true)
            {
                JsonObject body;
                lock (work) { if (!work.TryDequeue(out body!)) return; }
                var sw = Stopwatch.StartNew();
                using var resp = await http.PostAsJsonAsync("v1/completions", body);
                var json = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!;
                if (!resp.IsSuccessStatusCode) throw new InvalidOperationException($"HTTP {(int)resp.StatusCode}: {json.ToJsonString()}");
                lock (latencies) latencies.Add(sw.Elapsed.TotalMilliseconds);
                Interlocked.Add(ref tokens, json["usage"]!["completion_tokens"]!.GetValue<int>());
            }
        }));
        double seconds = clock.Elapsed.TotalSeconds;
        var sorted = latencies.Order().ToList();
        return (tokens / seconds, Percentile(sorted, 0.5), Percentile(sorted, 0.99));
    }

    static void ConcurrencySweep(CausalLM model, TextTokenizer tok, List<string> adapters, int maxTokens, double zipf, int seed, int rounds)
    {
        Console.WriteLine();
        Console.WriteLine($"streamed requests, 8 adapters (Zipf), max_tokens {maxTokens}, {rounds} rounds (median): prefill by 8 (default), all waiting at once, each alone");
        Console.WriteLine($"{"clients",7} {"prefill",-9} {"tokens/s",9} {"TTFT p50 ms",12} {"TTFT p99 ms",12}");
        foreach (int clients in new[] { 1, 8, 32 })
        {
            int requests = Math.Max(8, 2 * clients);
            // The default (at most 8 waiting requests per forward), every waiting request in one forward (padding allowing), each alone.
            var variants = new (string Name, int? MaxPrefill)[] { ("by 8", null), ("all", 32), ("alone", 1) };
            var results = variants.Select(_ => new List<(double Tps, double P50, double P99)>()).ToList();
            for (int r = 0; r < rounds; r++)
                for (int v = 0; v < variants.Length; v++)
                    results[v].Add(RunStreamed(model, tok, adapters, variants[v].MaxPrefill, requests, clients, maxTokens, zipf, seed + r).GetAwaiter().GetResult());
            var med = results.Select(l => l.OrderBy(x => x.Tps).ElementAt(rounds / 2)).ToList();
            for (int v = 0; v < variants.Length; v++)
                Console.WriteLine($"{clients,7} {variants[v].Name,-9} {med[v].Tps,9:F1} {med[v].P50,12:F0} {med[v].P99,12:F0}");
            var (b, s1) = (med[0], med[^1]);
            Console.WriteLine($"{clients,7} {"ratio",-9} {b.Tps / s1.Tps,9:F2} {b.P50 / s1.P50,12:F2} {b.P99 / s1.P99,12:F2}   (by 8 / alone: tokens/s up, TTFT down is better)");
        }
    }

    /// <summary>Streamed completions from <paramref name="clients"/> closed-loop clients: tokens/s and time to the first content chunk.</summary>
    static async Task<(double Tps, double P50, double P99)> RunStreamed(CausalLM model, TextTokenizer tok, List<string> adapters, int? maxPrefill,
        int requests, int clients, int maxTokens, double zipf, int seed)
    {
        var options = new ServerOptions { Host = "127.0.0.1", Port = 0, MaxBatch = 32, MaxPrefillBatch = maxPrefill, MaxQueue = requests, Adapters = adapters.Select((d, i) => ($"a{i}", d)).ToList() };
        await using var server = await PeftServer.StartAsync(model, tok, "base", options, new PeftAdapterLoader());
        using var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromMinutes(10) };
        var work = Requests(model, adapters.Count, requests, maxTokens, zipf, seed, stream: true);
        var ttft = new List<double>();
        long tokens = 0;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, clients).Select(async _ =>
        {
            while (true)
            {
                JsonObject body;
                lock (work) { if (!work.TryDequeue(out body!)) return; }
                var sw = Stopwatch.StartNew();
                using var req = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = JsonContent.Create(body) };
                using var resp = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead);
                if (!resp.IsSuccessStatusCode) throw new InvalidOperationException($"HTTP {(int)resp.StatusCode}: {await resp.Content.ReadAsStringAsync()}");
                using var reader = new StreamReader(await resp.Content.ReadAsStreamAsync());
                bool first = true;
                while (await reader.ReadLineAsync() is { } line)
                {
                    if (!line.StartsWith("data: ") || line == "data: [DONE]") continue;
                    var chunk = JsonNode.Parse(line["data: ".Length..])!;
                    if (chunk["usage"] is JsonObject usage) Interlocked.Add(ref tokens, usage["completion_tokens"]!.GetValue<int>());
                    else if (first) { lock (ttft) ttft.Add(sw.Elapsed.TotalMilliseconds); first = false; }
                }
            }
        }));
        double seconds = clock.Elapsed.TotalSeconds;
        var sorted = ttft.Order().ToList();
        return (tokens / seconds, Percentile(sorted, 0.5), Percentile(sorted, 0.99));
    }

    /// <summary>Greedy completions of random 16-48 token prompts, the adapter of each drawn with Zipf popularity (adapter k with weight 1/(k+1)^s).</summary>
    static Queue<JsonObject> Requests(CausalLM model, int adapters, int requests, int maxTokens, double zipf, int seed, bool stream)
    {
        var rng = new Random(seed);
        var weights = Enumerable.Range(0, adapters).Select(k => 1 / Math.Pow(k + 1, zipf)).ToArray();
        return new Queue<JsonObject>(Enumerable.Range(0, requests).Select(_ =>
        {
            var body = new JsonObject
            {
                ["model"] = $"a{Draw(rng, weights)}",
                ["prompt"] = new JsonArray(Enumerable.Range(0, rng.Next(16, 49)).Select(_ => (JsonNode)rng.Next(model.Config.VocabSize)).ToArray()),
                ["max_tokens"] = maxTokens, ["temperature"] = 0,
            };
            if (stream) { body["stream"] = true; body["stream_options"] = new JsonObject { ["include_usage"] = true }; }
            return body;
        }));
    }

    static int Draw(Random rng, double[] weights)
    {
        double u = rng.NextDouble() * weights.Sum();
        for (int k = 0; k < weights.Length; k++) if ((u -= weights[k]) <= 0) return k;
        return weights.Length - 1;
    }

    static double Percentile(List<double> sorted, double q) => sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(q * sorted.Count) - 1)];

    /// <summary>A word-level tokenizer.json ("w0".."wN-1", space-joined): the bench only needs ids to round-trip.</summary>
    internal static void WordTokenizer(string path, int vocab)
    {
        var v = new JsonObject();
        for (int i = 0; i < vocab; i++) v[$"w{i}"] = i;
        var json = new JsonObject
        {
            ["version"] = "1.0", ["truncation"] = null, ["padding"] = null, ["added_tokens"] = new JsonArray(), ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "WhitespaceSplit" }, ["post_processor"] = null, ["decoder"] = null,
            ["model"] = new JsonObject { ["type"] = "WordLevel", ["vocab"] = v, ["unk_token"] = "w0" },
        };
        File.WriteAllText(path, json.ToJsonString());
    }
}
