using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftSharp.Generation.Fast;

/// <summary>
/// y = W x (+ bias) for one input row over a row-major fp32 weight [rows, cols] in place (a libtorch tensor's
/// memory): the batch-1 decode's matrix-vector products. libtorch runs a one-row mm on one thread (its gemv is not
/// parallel), and a decode step is nothing but these, so each product here is split by rows over
/// <see cref="DecodeWorkers"/>. Four rows share each load of x, with one FMA accumulator per row (Vector512 where
/// the CPU has it, else Vector256, else scalar). Memory-bound: every weight is read once per token.
/// </summary>
internal sealed unsafe class Gemv : ChunkedJob
{
    /// <summary>Below this many weights one thread does the whole product (posting a job costs more).</summary>
    const long ParallelMinElements = 1 << 15;
    /// <summary>About 64 KB of weights per chunk: small enough to balance, large enough that claiming is noise.</summary>
    const int ChunkBytes = 1 << 16;

    float* _w, _x, _y, _bias;
    int _rows, _cols, _rowsPerChunk;

    public void Run(DecodeWorkers pool, float* w, float* bias, int rows, int cols, float* x, float* y)
    {
        _w = w; _bias = bias; _rows = rows; _cols = cols; _x = x; _y = y;
        if ((long)rows * cols < ParallelMinElements) { Rows(w, bias, cols, x, y, 0, rows); return; }
        _rowsPerChunk = Math.Max(4, (ChunkBytes / (cols * sizeof(float)) + 3) & ~3);
        Chunks = (rows + _rowsPerChunk - 1) / _rowsPerChunk;
        pool.Run(this);
    }

    public override void RunChunk(int chunk)
    {
        int r0 = chunk * _rowsPerChunk;
        Rows(_w, _bias, _cols, _x, _y, r0, Math.Min(_rows, r0 + _rowsPerChunk));
    }

    /// <summary>Rows [r0, r1) of y = W x + bias.</summary>
    public static void Rows(float* w, float* bias, int cols, float* x, float* y, int r0, int r1)
    {
        int r = r0;
        for (; r + 4 <= r1; r += 4)
        {
            float* w0 = w + (long)r * cols;
            Dot4(w0, w0 + cols, w0 + 2L * cols, w0 + 3L * cols, x, cols, y + r);
        }
        for (; r < r1; r++) y[r] = Dot(w + (long)r * cols, x, cols);
        if (bias != null) for (r = r0; r < r1; r++) y[r] += bias[r];
    }

    /// <summary>Four dot products of rows a..d with x, written to y[0..4].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Dot4(float* a, float* b, float* c, float* d, float* x, int n, float* y)
    {
        int i = 0;
        float sa = 0, sb = 0, sc = 0, sd = 0;
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            Vector512<float> va = default, vb = default, vc = default, vd = default;
            // Two x vectors per iteration: half the loop overhead, twice the loads in flight.
            for (; i + 32 <= n; i += 32)
            {
                var x0 = Vector512.Load(x + i);
                var x1 = Vector512.Load(x + i + 16);
                va = Vector512.FusedMultiplyAdd(Vector512.Load(a + i), x0, va);
                vb = Vector512.FusedMultiplyAdd(Vector512.Load(b + i), x0, vb);
                vc = Vector512.FusedMultiplyAdd(Vector512.Load(c + i), x0, vc);
                vd = Vector512.FusedMultiplyAdd(Vector512.Load(d + i), x0, vd);
                va = Vector512.FusedMultiplyAdd(Vector512.Load(a + i + 16), x1, va);
                vb = Vector512.FusedMultiplyAdd(Vector512.Load(b + i + 16), x1, vb);
                vc = Vector512.FusedMultiplyAdd(Vector512.Load(c + i + 16), x1, vc);
                vd = Vector512.FusedMultiplyAdd(Vector512.Load(d + i + 16), x1, vd);
            }
            for (; i + 16 <= n; i += 16)
            {
                var xv = Vector512.Load(x + i);
                va = Vector512.FusedMultiplyAdd(Vector512.Load(a + i), xv, va);
                vb = Vector512.FusedMultiplyAdd(Vector512.Load(b + i), xv, vb);
                vc = Vector512.FusedMultiplyAdd(Vector512.Load(c + i), xv, vc);
                vd = Vector512.FusedMultiplyAdd(Vector512.Load(d + i), xv, vd);
            }
            // The four horizontal sums at once: fold each 512-bit sum to 256 bits, then one transpose-and-add.
            var s4 = Sum4(va.GetLower() + va.GetUpper(), vb.GetLower() + vb.GetUpper(), vc.GetLower() + vc.GetUpper(), vd.GetLower() + vd.GetUpper());
            sa = s4[0]; sb = s4[1]; sc = s4[2]; sd = s4[3];
        }
        else if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            Vector256<float> va = default, vb = default, vc = default, vd = default;
            for (; i + 8 <= n; i += 8)
            {
                var xv = Vector256.Load(x + i);
                va = Vector256.FusedMultiplyAdd(Vector256.Load(a + i), xv, va);
                vb = Vector256.FusedMultiplyAdd(Vector256.Load(b + i), xv, vb);
                vc = Vector256.FusedMultiplyAdd(Vector256.Load(c + i), xv, vc);
                vd = Vector256.FusedMultiplyAdd(Vector256.Load(d + i), xv, vd);
            }
            var s4 = Sum4(va, vb, vc, vd);
            sa = s4[0]; sb = s4[1]; sc = s4[2]; sd = s4[3];
        }
        for (; i < n; i++) { float xi = x[i]; sa += a[i] * xi; sb += b[i] * xi; sc += c[i] * xi; sd += d[i] * xi; }
        y[0] = sa; y[1] = sb; y[2] = sc; y[3] = sd;
    }

    /// <summary>(sum a, sum b, sum c, sum d) of four 8-lane vectors: horizontal adds pair the lanes up, then the 128-bit halves add.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<float> Sum4(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
    {
        if (Avx.IsSupported)
        {
            var ab = Avx.HorizontalAdd(a, b);    // a01 a23 b01 b23 | a45 a67 b45 b67
            var cd = Avx.HorizontalAdd(c, d);
            var abcd = Avx.HorizontalAdd(ab, cd); // a0123 b0123 c0123 d0123 | a4567 b4567 c4567 d4567
            return abcd.GetLower() + abcd.GetUpper();
        }
        return Vector128.Create(Vector256.Sum(a), Vector256.Sum(b), Vector256.Sum(c), Vector256.Sum(d));
    }

    /// <summary>One dot product of n floats (also the attention's q.k).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Dot(float* a, float* x, int n)
    {
        int i = 0;
        float s = 0;
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            Vector512<float> v = default;
            for (; i + 16 <= n; i += 16) v = Vector512.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(x + i), v);
            s = Vector512.Sum(v);
        }
        else if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            Vector256<float> v = default;
            for (; i + 8 <= n; i += 8) v = Vector256.FusedMultiplyAdd(Vector256.Load(a + i), Vector256.Load(x + i), v);
            s = Vector256.Sum(v);
        }
        for (; i < n; i++) s += a[i] * x[i];
        return s;
    }

    /// <summary>y += alpha * x over n floats (the attention's weighted sum of values).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Axpy(float alpha, float* x, float* y, int n)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var av = Vector256.Create(alpha);
            for (; i + 8 <= n; i += 8) Vector256.FusedMultiplyAdd(av, Vector256.Load(x + i), Vector256.Load(y + i)).Store(y + i);
        }
        for (; i < n; i++) y[i] += alpha * x[i];
    }
}
