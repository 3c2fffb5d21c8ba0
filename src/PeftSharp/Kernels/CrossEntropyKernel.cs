using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftSharp.Kernels;

/// <summary>
/// Summed cross entropy over [rows, vocab] fp32 logits with int64 targets (a target of TokenSequence.Ignore, -100, scores
/// nothing), AVX-512F, blocks of rows on libtorch's OpenMP team. Forward: each row's max and sum of exponentials in one
/// sweep of a row (16 KiB at vocab 4096: it stays in L1 for the second), logsumexp kept per row, loss = sum of
/// (lse - logit[target]); each block's sum in double, blocks added in index order (the same bits on any thread count).
/// Backward: d logits = (softmax - onehot(target)) * g from the saved logsumexp in one pass, zero rows where ignored.
/// </summary>
internal static unsafe class CrossEntropyKernel
{
    const long Ignore = Data.TokenSequence.Ignore;
    const int W = 16;
    const int RowsPerBlock = 16;

    public static bool Supported => Avx512F.IsSupported;

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
                float l = LogSumExp(row, vocab);
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
                SoftmaxRow((float*)lp + r * vocab, vocab, ((float*)sp)[r], g, d);
                d[t] -= g;
            }
        });
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float LogSumExp(float* row, int n)
    {
        var vmax = Vector512.Create(float.NegativeInfinity);
        int j = 0;
        for (; j + W <= n; j += W) vmax = Avx512F.Max(vmax, Avx512F.LoadVector512(row + j));
        float max = HorizontalMax(vmax);
        for (int k = j; k < n; k++) max = Math.Max(max, row[k]);
        var shift = Vector512.Create(-max);
        var acc = Vector512<float>.Zero;
        for (j = 0; j + W <= n; j += W) acc += VectorMath.Exp(Avx512F.LoadVector512(row + j) + shift);
        if (j < n)
        {
            // The tail's lanes past the row are masked out (exp of a padding lane would add e^-87, not 0).
            var lanes = Vector512.LessThan(Vector512.Create(0f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), Vector512.Create((float)(n - j)));
            acc += Vector512.ConditionalSelect(lanes, VectorMath.Exp(Load(row + j, n - j) + shift), Vector512<float>.Zero);
        }
        return max + MathF.Log(Vector512.Sum(acc));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SoftmaxRow(float* row, int n, float lse, float g, float* d)
    {
        var shift = Vector512.Create(-lse);
        var vg = Vector512.Create(g);
        int j = 0;
        for (; j + W <= n; j += W) Avx512F.Store(d + j, VectorMath.Exp(Avx512F.LoadVector512(row + j) + shift) * vg);
        if (j == n) return;
        float* tail = stackalloc float[W];
        Avx512F.Store(tail, VectorMath.Exp(Load(row + j, n - j) + shift) * vg);
        new ReadOnlySpan<float>(tail, n - j).CopyTo(new Span<float>(d + j, n - j));
    }

    /// <summary>The last n &lt; 16 floats of a row as a vector, -inf past them.</summary>
    static Vector512<float> Load(float* p, int n)
    {
        float* buf = stackalloc float[W];
        new Span<float>(buf, W).Fill(float.NegativeInfinity);
        new ReadOnlySpan<float>(p, n).CopyTo(new Span<float>(buf, n));
        return Avx512F.LoadVector512(buf);
    }

    static float HorizontalMax(Vector512<float> v)
    {
        var m = Avx.Max(v.GetLower(), v.GetUpper());
        var h = Sse.Max(m.GetLower(), m.GetUpper());
        h = Sse.Max(h, Sse.Shuffle(h, h, 0b01_00_11_10));
        h = Sse.Max(h, Sse.Shuffle(h, h, 0b10_11_00_01));
        return h.ToScalar();
    }
}
