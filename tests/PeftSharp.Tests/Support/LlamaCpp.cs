using LLama;
using LLama.Common;
using LLama.Native;

namespace PeftSharp.Tests.Support;

/// <summary>
/// llama.cpp itself (LLamaSharp 0.30.0's CPU build) running a GGUF file: the checker of <c>peft export gguf</c>.
/// K and V caches are F32 and flash attention is off: llama.cpp's default F16 cache alone moves logits by 1e-4..5e-3
/// relative (../shared/docs/gguf-notes.md). One thread: the tiny models gain nothing from more, and the box is shared.
/// </summary>
public sealed class LlamaCpp : IDisposable
{
    static LlamaCpp()
    {
        // llama.cpp logs every load at length; the tests need only its errors.
        NativeLibraryConfig.All.WithLogCallback((level, message) =>
        {
            if (level == LLamaLogLevel.Error) Console.Error.Write($"llama.cpp: {message}");
        });
    }

    readonly LLamaWeights _weights;
    readonly LLamaContext _ctx;

    /// <summary>Loads <paramref name="gguf"/>; with <paramref name="lora"/>, also a llama.cpp adapter GGUF applied at scale 1.</summary>
    public LlamaCpp(string gguf, uint contextSize = 128, string? lora = null)
    {
        var p = new ModelParams(gguf)
        {
            ContextSize = contextSize,
            GpuLayerCount = 0,
            Threads = 1,
            BatchThreads = 1,
            TypeK = GGMLType.GGML_TYPE_F32,
            TypeV = GGMLType.GGML_TYPE_F32,
            FlashAttention = false,
        };
        _weights = LLamaWeights.LoadFromFile(p);
        _ctx = _weights.CreateContext(p);
        if (lora is not null)
        {
            var adapter = _weights.NativeHandle.LoadLoraFromFile(lora);
            _ctx.NativeHandle.SetLoraAdapters([(adapter, 1f)]);
        }
    }

    public int VocabSize => _ctx.Vocab.Count;

    /// <summary>The logits after the whole prompt (a fresh sequence each call).</summary>
    public float[] LastLogits(IReadOnlyList<int> prompt)
    {
        _ctx.NativeHandle.MemoryClear();
        var batch = new LLamaBatch();
        for (int i = 0; i < prompt.Count; i++) batch.Add((LLamaToken)prompt[i], i, LLamaSeqId.Zero, i == prompt.Count - 1);
        Decode(batch);
        return _ctx.NativeHandle.GetLogitsIth(batch.TokenCount - 1).ToArray();
    }

    /// <summary>Greedy continuation of <paramref name="prompt"/>: argmax at each step, through llama.cpp's KV cache.</summary>
    public List<int> Greedy(IReadOnlyList<int> prompt, int newTokens)
    {
        var logits = LastLogits(prompt);
        var produced = new List<int>();
        var batch = new LLamaBatch();
        for (int step = 0; step < newTokens; step++)
        {
            int next = ArgMax(logits);
            produced.Add(next);
            if (step == newTokens - 1) break;
            batch.Clear();
            batch.Add((LLamaToken)next, prompt.Count + step, LLamaSeqId.Zero, true);
            Decode(batch);
            logits = _ctx.NativeHandle.GetLogitsIth(0).ToArray();
        }
        return produced;
    }

    /// <summary>llama.cpp's own tokenisation of a text (special tokens as the GGUF's add_bos/add_eos say).</summary>
    public int[] Tokenize(string text) => _ctx.Tokenize(text, addBos: true, special: false).Select(t => (int)t).ToArray();

    void Decode(LLamaBatch batch)
    {
        var r = _ctx.NativeHandle.Decode(batch);
        if (r != DecodeResult.Ok) throw new InvalidOperationException($"llama.cpp decode failed: {r}");
    }

    public static int ArgMax(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    public void Dispose()
    {
        _ctx.Dispose();
        _weights.Dispose();
    }
}
