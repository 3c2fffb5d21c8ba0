using System.Diagnostics;
using PeftSharp.Generation;
using PeftSharp.Models;

namespace PeftSharp.Bench;

/// <summary>
/// Per-token cost of turning ids into text and of sampling, against what they replaced: the previous streamer decoded
/// every id so far at each token (quadratic in the output), the previous sampler sorted the whole vocabulary for every
/// sampled token. Median of --rounds, old and new alternated.
/// </summary>
public sealed class TextBench : IBench
{
    public string Name => "text";
    public string Description => "incremental detokenisation vs whole-output decode; sampler vs full vocabulary sort (--tokenizer --vocab --rounds)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        string path = a.Get("tokenizer", "../shared/fixtures/real/tinyllama-chat-tokenizer/tokenizer.json");
        int rounds = a.Int("rounds", 3), vocab = a.Int("vocab", 128256);
        Console.WriteLine($"cpu threads {Environment.ProcessorCount}; tokenizer {path}");
        using var tok = new TextTokenizer(path);
        int[] prompt = tok.Encode("Once upon a time", addSpecialTokens: true);
        int[] story = tok.Encode(" Lily saw a big dog, and they played in the park all day long. 日本 🙂");
        int[] gen = Enumerable.Repeat(story, 4000 / story.Length + 1).SelectMany(x => x).Take(4000).ToArray();
        foreach (int n in new[] { 500, 1000, 2000, 4000 })
        {
            var ids = gen.Take(n).ToArray();
            double old = Median(rounds, () => WholeDecode(tok, prompt, ids)), now = Median(rounds, () => Incremental(tok, prompt, ids));
            Console.WriteLine($"detokenise {n,5} tokens: whole-output decode {old / n * 1e6,8:F1} us/token, incremental {now / n * 1e6,6:F1} us/token ({old / now:F0}x)");
        }

        var rng = new Random(1);
        var logits = Enumerable.Range(0, vocab).Select(_ => (float)(rng.NextDouble() * 20)).ToArray();
        double sorted = Median(rounds, () => SortedSample(logits, 0.8, 20));
        foreach (var (label, o) in new[] { ("top_p 1", new SamplingOptions { Temperature = 0.8 }), ("top_k 50, top_p 0.9", new SamplingOptions { Temperature = 0.8, TopK = 50, TopP = 0.9 }), ("top_p 0.9", new SamplingOptions { Temperature = 0.8, TopP = 0.9 }) })
        {
            var s = new TokenSampler(o with { Seed = 1 });
            double t = Median(rounds, () => { for (int i = 0; i < 20; i++) s.Sample(logits); });
            Console.WriteLine($"sample over {vocab} ids, {label,-20}: {t / 20 * 1e3,6:F2} ms/token; full sort {sorted / 20 * 1e3:F2} ms/token ({sorted / t:F1}x)");
        }
        return 0;
    }

    static double Median(int rounds, Action f)
    {
        f();
        return BenchStats.Median(Enumerable.Range(0, rounds).Select(_ => { var sw = Stopwatch.StartNew(); f(); return sw.Elapsed.TotalSeconds; }));
    }

    /// <summary>The previous streamer: decode all ids at every token, emit what grew.</summary>
    static void WholeDecode(TextTokenizer tok, int[] prompt, int[] gen)
    {
        var ids = new List<int>();
        int emitted = 0;
        foreach (int id in gen)
        {
            ids.Add(id);
            string t = tok.Decode(ids);
            if (!t.EndsWith('\uFFFD') && t.Length >= emitted) emitted = t.Length;
        }
    }

    static void Incremental(TextTokenizer tok, int[] prompt, int[] gen)
    {
        var s = new TextStreamer(tok, prompt);
        foreach (int id in gen) s.Push(id);
        s.Flush();
    }

    /// <summary>The previous sampler's work: exp over the vocabulary, then a sort of all of it by probability.</summary>
    static void SortedSample(float[] logits, double temperature, int times)
    {
        for (int k = 0; k < times; k++)
        {
            double max = logits.Max();
            var p = new double[logits.Length];
            for (int i = 0; i < p.Length; i++) p[i] = Math.Exp((logits[i] - max) / temperature);
            var order = Enumerable.Range(0, p.Length).ToArray();
            Array.Sort(order, (x, y) => p[y].CompareTo(p[x]));
        }
    }
}
