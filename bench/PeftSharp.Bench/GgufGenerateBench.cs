using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LLama;
using LLama.Common;
using LLama.Native;
using PeftSharp.Generation;
using PeftSharp.Hub;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// Batch-1 greedy decode tokens/s of PeftSharp's generate loop (TextGenerator over the model `--model FILE.gguf`
/// loads) beside llama.cpp's (LLamaSharp 0.30.0's CPU build) on the same f32 GGUF, the same prompt and thread count,
/// rounds alternated (order rotated each round), with PeftSharp's previous libtorch decode path as a third side. Decode rate = (tokens - 1) / time from the first generated token
/// to the last, so the prompt's prefill is not counted on either side. llama.cpp runs with its defaults otherwise.
/// </summary>
public sealed class GgufGenerateBench : IBench
{
    public string Name => "gguf-generate";
    public string Description => "decode tokens/s of generate vs llama.cpp on one f32 GGUF (--gguf FILE --tokens --rounds --threads --prompt --profile; --bandwidth-only: the gemv kernel vs a plain read of the weights)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        string gguf = a.Get("gguf", "");
        if (gguf == "") throw new ArgumentException("--gguf is required");
        int tokens = a.Int("tokens", 64), rounds = a.Int("rounds", 3), threads = a.Int("threads", 2);
        string promptText = a.Get("prompt", "Once upon a time, there was a little girl named Lily.");
        set_num_threads(threads);
        NativeLibraryConfig.All.WithLogCallback((level, message) => { if (level == LLamaLogLevel.Error) Console.Error.Write($"llama.cpp: {message}"); });

        using var model = ModelLoader.Load(gguf);
        if (a.Flag("bandwidth-only")) { Bandwidth(model, 0, threads); return 0; }
        using var tok = TextTokenizer.FromFolder(ModelLocation.Resolve(gguf, "--gguf"));
        int[] prompt = tok.Encode(promptText, addSpecialTokens: true);
        var p = new ModelParams(gguf) { ContextSize = (uint)(prompt.Length + tokens + 8), GpuLayerCount = 0, Threads = threads, BatchThreads = threads };
        using var weights = LLamaWeights.LoadFromFile(p);
        using var ctx = weights.CreateContext(p);

        var c = model.Config;
        long parameters = model.parameters().Sum(x => x.numel());
        Console.WriteLine($"model: {Path.GetFileName(gguf)} ({parameters / 1e6:F1}M params, h {c.HiddenSize}, {c.NumLayers} layers, vocab {c.VocabSize}), f32");
        Console.WriteLine($"prompt {prompt.Length} tokens, {tokens} new tokens greedy, batch 1, {threads} threads each side");
        Console.WriteLine($"cpu: {CpuModel()}; flags: {string.Join(" ", CpuFlags())}; load average {File.ReadAllText("/proc/loadavg").Trim()}");

        // One warm-up each (first-call allocations, page faults of the weights).
        Ours(model, prompt, Math.Min(8, tokens), DecodePath.Auto, line => Console.WriteLine($"peftsharp {line}"));
        Ours(model, prompt, Math.Min(8, tokens), DecodePath.Torch);
        Theirs(ctx, prompt, Math.Min(8, tokens));
        // Three sides, the order rotated each round: the C# decode step, the libtorch forward (the previous path), llama.cpp.
        var sides = new Func<double>[] { () => Ours(model, prompt, tokens, DecodePath.Auto), () => Ours(model, prompt, tokens, DecodePath.Torch), () => Theirs(ctx, prompt, tokens) };
        var fastRatios = new List<double>();
        var torchRatios = new List<double>();
        var gains = new List<double>();
        var fastRates = new List<double>();
        for (int r = 0; r < rounds; r++)
        {
            var rate = new double[3];
            for (int i = 0; i < 3; i++) { int side = (i + r) % 3; rate[side] = sides[side](); }
            fastRatios.Add(rate[0] / rate[2]); torchRatios.Add(rate[1] / rate[2]); gains.Add(rate[0] / rate[1]); fastRates.Add(rate[0]);
            Console.WriteLine($"round {r + 1}: peftsharp {rate[0]:F1} tok/s, peftsharp libtorch path {rate[1]:F1} tok/s, llama.cpp {rate[2]:F1} tok/s; " +
                $"ratios {rate[0] / rate[2]:F2}, {rate[1] / rate[2]:F2} (libtorch path), C#/libtorch {rate[0] / rate[1]:F2}");
        }
        Console.WriteLine($"decode tokens/s peftsharp/llama.cpp = {BenchStats.Median(fastRatios):F2} (median of {rounds} alternated rounds; goal >= 0.8); " +
            $"the libtorch decode path/llama.cpp = {BenchStats.Median(torchRatios):F2}; C# step / libtorch path = {BenchStats.Median(gains):F2}");
        Bandwidth(model, BenchStats.Median(fastRates), threads);
        if (a.Flag("profile")) { Profile(model, prompt, tokens, DecodePath.Auto); Profile(model, prompt, tokens, DecodePath.Torch); }
        return 0;
    }

    /// <summary>
    /// The decode's effective memory bandwidth (every weight read once per token) beside the C# gemv kernel alone over
    /// the same weights and a plain read of the same bytes, both on the same threads (best of 5, alternated): how
    /// close the kernel and the whole step are to the machine's limit.
    /// </summary>
    static unsafe void Bandwidth(CausalLM model, double tokensPerSecond, int threads)
    {
        var weights = model.Linears().Select(l => l.weight!).Append(model.lm_head is null ? model.model.embed_tokens.weight : null).OfType<Tensor>().ToList();
        double bytes = weights.Sum(w => (double)w.numel() * 4);
        var mats = weights.Select(w => ((nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(w.bytes)), (int)w.shape[0], (int)w.shape[1])).ToArray();
        int widest = mats.Max(m => Math.Max(m.Item2, m.Item3));
        var x = new float[widest];
        var y = new float[widest];
        for (int i = 0; i < widest; i++) x[i] = 1f / (i + 1);
        var pool = Generation.Fast.DecodeWorkers.ForThreads(threads);
        var gemv = new Generation.Fast.Gemv();
        double plain = 0, kernel = 0;
        for (int rep = 0; rep < 5; rep++)
        {
            var clock = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
            {
                float sum = 0;
                foreach (var (p, rows, cols) in mats)
                {
                    long n = (long)rows * cols, lo = n * t / threads, hi = n * (t + 1) / threads;
                    sum += Sum((float*)p + lo, (int)(hi - lo));
                }
                if (sum == float.PositiveInfinity) Console.Write("");
            });
            plain = Math.Max(plain, bytes / clock.Elapsed.TotalSeconds);
            clock.Restart();
            fixed (float* px = x, py = y)
                foreach (var (p, rows, cols) in mats) gemv.Run(pool, (float*)p, null, rows, cols, px, py);
            kernel = Math.Max(kernel, bytes / clock.Elapsed.TotalSeconds);
        }
        double decode = bytes * tokensPerSecond;
        Console.WriteLine($"weights {bytes / 1e6:F0} MB read per token on {threads} threads: " + (decode > 0 ? $"the decode {decode / 1e9:F1} GB/s ({decode / plain:P0} of a plain read), " : "") +
            $"the gemv kernel alone {kernel / 1e9:F1} GB/s ({kernel / plain:P0}), a plain read of the same bytes {plain / 1e9:F1} GB/s");

        static float Sum(float* p, int n)
        {
            var acc = System.Runtime.Intrinsics.Vector512<float>.Zero;
            int i = 0;
            for (; i + 16 <= n; i += 16) acc += System.Runtime.Intrinsics.Vector512.Load(p + i);
            float s = System.Runtime.Intrinsics.Vector512.Sum(acc);
            for (; i < n; i++) s += p[i];
            return s;
        }
    }

    /// <summary>Where one of our decode runs spends its time after the prefill, by op kind (ForwardProfiler).</summary>
    static void Profile(CausalLM model, int[] prompt, int tokens, DecodePath path)
    {
        var profiler = new ForwardProfiler();
        ForwardProfiler.Current = profiler;
        var clock = new Stopwatch();
        int n = 0;
        try
        {
            foreach (var _ in TextGenerator.Generate(model, prompt, new SamplingOptions { MaxNewTokens = tokens }, [], path))
                if (n++ == 0) { profiler.Reset(); clock.Start(); }   // the prefill step is not decode
        }
        finally { ForwardProfiler.Current = null; }
        double wall = clock.Elapsed.TotalSeconds, attributed = 0;
        tokens = n - 1;
        Console.WriteLine($"profile ({(path == DecodePath.Auto ? "C# decode step" : "libtorch decode path")}) of one generate's {tokens} decode steps ({wall / tokens * 1e3:F2} ms/token): kind, ms/token, share");
        foreach (var (kind, (s, _)) in profiler.Totals.OrderByDescending(kv => kv.Value.Seconds))
        {
            attributed += s;
            Console.WriteLine($"  {kind,-44} {s / tokens * 1e3,9:F3} {s / wall,7:P1}");
        }
        Console.WriteLine($"  {"(unattributed: loop, sampler, scopes)",-44} {(wall - attributed) / tokens * 1e3,9:F3} {(wall - attributed) / wall,7:P1}");
    }

    static double Ours(CausalLM model, int[] prompt, int tokens, DecodePath path, Action<string>? explain = null)
    {
        var clock = new Stopwatch();
        int n = 0;
        foreach (var _ in TextGenerator.Generate(model, prompt, new SamplingOptions { MaxNewTokens = tokens }, [], path, explain))
            if (n++ == 0) clock.Start();
        return (n - 1) / clock.Elapsed.TotalSeconds;
    }

    static double Theirs(LLamaContext ctx, int[] prompt, int tokens)
    {
        ctx.NativeHandle.MemoryClear();
        var batch = new LLamaBatch();
        for (int i = 0; i < prompt.Length; i++) batch.Add((LLamaToken)prompt[i], i, LLamaSeqId.Zero, i == prompt.Length - 1);
        Decode(ctx, batch);
        int next = ArgMax(ctx.NativeHandle.GetLogitsIth(batch.TokenCount - 1));
        var clock = Stopwatch.StartNew();
        for (int step = 1; step < tokens; step++)
        {
            batch.Clear();
            batch.Add((LLamaToken)next, prompt.Length + step - 1, LLamaSeqId.Zero, true);
            Decode(ctx, batch);
            next = ArgMax(ctx.NativeHandle.GetLogitsIth(0));
        }
        return (tokens - 1) / clock.Elapsed.TotalSeconds;
    }

    static void Decode(LLamaContext ctx, LLamaBatch batch)
    {
        var rc = ctx.NativeHandle.Decode(batch);
        if (rc != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode: {rc}");
    }

    static int ArgMax(Span<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    static string CpuModel() => File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?";

    static IEnumerable<string> CpuFlags()
    {
        var flags = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal))?.Split(':', 2)[1].Split(' ', StringSplitOptions.RemoveEmptyEntries) ?? [];
        return flags.Where(f => f is "avx" or "avx2" or "fma" or "f16c" || f.StartsWith("avx512", StringComparison.Ordinal) || f.StartsWith("amx", StringComparison.Ordinal)).Order();
    }
}
