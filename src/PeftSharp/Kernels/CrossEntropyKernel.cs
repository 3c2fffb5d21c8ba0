using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PeftSharp.Kernels;

/// <summary>
/// Summed cross entropy over [rows, vocab] fp32 logits with int64 targets (a target of TokenSequence.Ignore, -100, scores
/// nothing), 16 lanes (AVX-512F) or 8 (AVX2 + FMA; one body over <see cref="ILanes{V}"/>), blocks of rows on libtorch's
/// OpenMP team. Forward: each row's max and sum of exponentials in one
/// sweep of a row (16 KiB at vocab 4096: it stays in L1 for the second), logsumexp kept per row, loss = sum of
/// (lse - logit[target]); each block's sum in double, blocks added in index order (the same bits on any thread count).
/// Backward: d logits = (softmax - onehot(target)) * g from the saved logsumexp in one pass, zero rows where ignored.
/// </summary>
internal static unsafe class CrossEntropyKernel
{
    const long Ignore = Data.TokenSequence.Ignore;
    /// <summary>The widest vector's lanes: the tail buffer's size.</summary>
    const int MaxLanes = 16;
    const int RowsPerBlock = 16;

    public static bool Supported => KernelLanes.Supported;

    /// <summary>The summed loss; lse[r] gets row r's logsumexp (0 where ignored). Throws on a target outside [0, vocab) other than the ignore index.</summary>
    public static double Forward(float* logits, long rows, int vocab, long* targets, float* lse, int threads)
    {
        int blocks = (int)((rows + RowsPerBlock - 1) / RowsPerBlock);
        var partial = new double[blocks];
        long bad = long.MinValue;
        nint lp = (nint)logits, tp = (nint)targets, sp = (nint)lse;
        TorchThreads.For(blocks, threads, i =>
        {
            double sum = 0;
            for (long r = (long)i * RowsPerBlock; r < Math.Min(rows, (i + 1L) * RowsPerBlock); r++)
            {
                long t = ((long*)tp)[r];
                if (t == Ignore) { ((float*)sp)[r] = 0; continue; }
                if ((ulong)t >= (ulong)vocab) { Interlocked.Exchange(ref bad, t); continue; }
                float* row = (float*)lp + r * vocab;
                float l = KernelLanes.Wide ? LogSumExp<Lanes16, Vector512<float>>(row, vocab) : LogSumExp<Lanes8, Vector256<float>>(row, vocab);
                ((float*)sp)[r] = l;
                sum += (double)l - row[t];
            }
            partial[i] = sum;
        });
        if (bad != long.MinValue) throw new ArgumentException($"label {bad} is outside the vocabulary [0, {vocab})");
        double total = 0;
        foreach (var p in partial) total += p;
        return total;
    }

    /// <summary>dLogits = (exp(logits - lse) - onehot(target)) * g per row; rows whose target is ignored get zeros.</summary>
    public static void Backward(float* logits, long rows, int vocab, long* targets, float* lse, float g, float* dLogits, int threads)
    {
        int blocks = (int)((rows + RowsPerBlock - 1) / RowsPerBlock);
        nint lp = (nint)logits, tp = (nint)targets, sp = (nint)lse, dp = (nint)dLogits;
        TorchThreads.For(blocks, threads, i =>
        {
            for (long r = (long)i * RowsPerBlock; r < Math.Min(rows, (i + 1L) * RowsPerBlock); r++)
            {
                long t = ((long*)tp)[r];
                float* d = (float*)dp + r * vocab;
                if (t == Ignore) { new Span<float>(d, vocab).Clear(); continue; }
                float* row = (float*)lp + r * vocab;
                if (KernelLanes.Wide) SoftmaxRow<Lanes16, Vector512<float>>(row, vocab, ((float*)sp)[r], g, d);
                else SoftmaxRow<Lanes8, Vector256<float>>(row, vocab, ((float*)sp)[r], g, d);
                d[t] -= g;
            }
        });
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float LogSumExp<L, V>(float* row, int n) where L : ILanes<V> where V : unmanaged
    {
        var vmax = L.Create(float.NegativeInfinity);
        int j = 0;
        for (; j + L.Count <= n; j += L.Count) vmax = L.Max(vmax, L.Load(row + j));
        float max = L.HorizontalMax(vmax);
        for (int k = j; k < n; k++) max = Math.Max(max, row[k]);
        var shift = L.Create(-max);
        var acc = L.Zero;
        for (j = 0; j + L.Count <= n; j += L.Count) acc = L.Add(acc, L.Exp(L.Add(L.Load(row + j), shift)));
        // The tail's lanes past the row are masked out (exp of a padding lane would add e^-87, not 0).
        if (j < n) acc = L.Add(acc, L.KeepFirst(L.Exp(L.Add(Load<L, V>(row + j, n - j), shift)), n - j));
        return max + MathF.Log(L.Sum(acc));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SoftmaxRow<L, V>(float* row, int n, float lse, float g, float* d) where L : ILanes<V> where V : unmanaged
    {
        var shift = L.Create(-lse);
        var vg = L.Create(g);
        int j = 0;
        for (; j + L.Count <= n; j += L.Count) L.Store(d + j, L.Mul(L.Exp(L.Add(L.Load(row + j), shift)), vg));
        if (j == n) return;
        float* tail = stackalloc float[MaxLanes];
        L.Store(tail, L.Mul(L.Exp(L.Add(Load<L, V>(row + j, n - j), shift)), vg));
        new ReadOnlySpan<float>(tail, n - j).CopyTo(new Span<float>(d + j, n - j));
    }

    /// <summary>The last n (&lt; the lane count) floats of a row as a vector, -inf past them.</summary>
    static V Load<L, V>(float* p, int n) where L : ILanes<V> where V : unmanaged
    {
        float* buf = stackalloc float[MaxLanes];
        new Span<float>(buf, L.Count).Fill(float.NegativeInfinity);
        new ReadOnlySpan<float>(p, n).CopyTo(new Span<float>(buf, n));
        return L.Load(buf);
    }
}
