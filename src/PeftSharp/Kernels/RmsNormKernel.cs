using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftSharp.Kernels;

/// <summary>
/// RMSNorm over contiguous rows in one pass each way, AVX-512 (Vector512) with a scalar tail, so any width works; x, y,
/// the gradients in fp32 (<see cref="F32"/>) or bf16 (<see cref="Bf16"/>: widened on load, rounded to nearest even on
/// store), all arithmetic in fp32, the weight an fp32 row. Forward: y = (x * rstd) * w with rstd = 1 / sqrt(mean(x^2) +
/// eps) (the per-row rstd kept for backward); <c>roundNormed</c> rounds x * rstd to the element type before the weight,
/// as HF's Llama norm casts back to the input dtype before scaling. Backward: dx = rstd * g * w - x * rstd^3 *
/// mean(g * w * x); dw = sum over rows of g * x * rstd. Rows are split into blocks whose size depends only on the shape;
/// each block's dw is a partial row, and the partials are summed in block order, so the bits do not depend on how many
/// threads ran or which took which block.
/// </summary>
internal static unsafe class RmsNormKernel
{
    /// <summary>Whether this machine runs the kernel's vectors in hardware (else the model keeps the op chain).</summary>
    public static bool Supported => Vector512.IsHardwareAccelerated;

    /// <summary>Below this many elements one thread does it all (a parallel region costs more than the work).</summary>
    const long ParallelMin = 1 << 15;

    /// <summary>Rows per block: at least 16, and at most 64 blocks (the dw partials are blocks x width floats).</summary>
    static int RowsPerBlock(int rows) => Math.Max(16, (rows + 63) / 64);

    static int Threads(int rows, int width, int threads) => (long)rows * width < ParallelMin ? 1 : threads;

    /// <summary>y and rstd (null: not kept) from x [rows, width] and the effective weight w [width].</summary>
    public static void Forward<T>(T* x, float* w, T* y, float* rstd, int rows, int width, float eps, bool roundNormed, int threads) where T : unmanaged, IElement<T>
    {
        int per = RowsPerBlock(rows), blocks = (rows + per - 1) / per;
        nint xp = (nint)x, wp = (nint)w, yp = (nint)y, rp = (nint)rstd;
        TorchThreads.For(blocks, Threads(rows, width, threads), b =>
        {
            int end = Math.Min(rows, (b + 1) * per);
            for (int r = b * per; r < end; r++)
            {
                long off = (long)r * width;
                float s = ForwardRow((T*)xp + off, (float*)wp, (T*)yp + off, width, eps, roundNormed);
                if (rp != 0) ((float*)rp)[r] = s;
            }
        });
    }

    /// <summary>
    /// dx [rows, width] and, where <paramref name="dw"/> is not null, dw [width] (overwritten) from the forward's x, the
    /// effective weight, rstd and the incoming gradient g.
    /// </summary>
    public static void Backward<T>(T* x, float* w, float* rstd, T* g, T* dx, float* dw, int rows, int width, int threads) where T : unmanaged, IElement<T>
    {
        int per = RowsPerBlock(rows), blocks = (rows + per - 1) / per;
        float* partial = dw == null ? null : (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)((long)blocks * width * 4), 64);
        try
        {
            nint xp = (nint)x, wp = (nint)w, rp = (nint)rstd, gp = (nint)g, dxp = (nint)dx, pp = (nint)partial;
            TorchThreads.For(blocks, Threads(rows, width, threads), b =>
            {
                float* acc = pp == 0 ? null : (float*)pp + (long)b * width;
                if (acc != null) new Span<float>(acc, width).Clear();
                int end = Math.Min(rows, (b + 1) * per);
                for (int r = b * per; r < end; r++)
                {
                    long off = (long)r * width;
                    BackwardRow((T*)xp + off, (float*)wp, ((float*)rp)[r], (T*)gp + off, (T*)dxp + off, acc, width);
                }
            });
            if (dw == null) return;
            new Span<float>(dw, width).Clear();
            for (int b = 0; b < blocks; b++) Add(dw, partial + (long)b * width, width);
        }
        finally { if (partial != null) System.Runtime.InteropServices.NativeMemory.AlignedFree(partial); }
    }

    // Optimised from the first call: tier-0 code of Vector512 calls is ~10x slower and a short run may never leave it.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float ForwardRow<T>(T* x, float* w, T* y, int n, float eps, bool roundNormed) where T : unmanaged, IElement<T>
    {
        var a0 = Vector512<float>.Zero;
        var a1 = Vector512<float>.Zero;
        int j = 0;
        for (; j + 32 <= n; j += 32)
        {
            var v0 = T.Load(x + j);
            var v1 = T.Load(x + j + 16);
            a0 = Vector512.FusedMultiplyAdd(v0, v0, a0);
            a1 = Vector512.FusedMultiplyAdd(v1, v1, a1);
        }
        if (j + 16 <= n) { var v = T.Load(x + j); a0 = Vector512.FusedMultiplyAdd(v, v, a0); j += 16; }
        float ss = Vector512.Sum(a0 + a1);
        for (int t = j; t < n; t++) ss += T.Get(x + t) * T.Get(x + t);
        float r = 1f / MathF.Sqrt(ss / n + eps);
        // (x * rstd) * w, rounded in that order as the op chain does.
        var vr = Vector512.Create(r);
        for (j = 0; j + 16 <= n; j += 16)
        {
            var v = T.Load(x + j) * vr;
            if (roundNormed) v = T.Round(v);
            T.Store(y + j, v * Vector512.Load(w + j));
        }
        for (; j < n; j++)
        {
            float v = T.Get(x + j) * r;
            if (roundNormed) v = T.Round(v);
            T.Set(y + j, v * w[j]);
        }
        return r;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void BackwardRow<T>(T* x, float* w, float r, T* g, T* dx, float* acc, int n) where T : unmanaged, IElement<T>
    {
        // mean(g * w * x): the one reduction of the backward.
        var a0 = Vector512<float>.Zero;
        int j = 0;
        for (; j + 16 <= n; j += 16) a0 = Vector512.FusedMultiplyAdd(T.Load(g + j) * Vector512.Load(w + j), T.Load(x + j), a0);
        float dot = Vector512.Sum(a0);
        for (int t = j; t < n; t++) dot += T.Get(g + t) * w[t] * T.Get(x + t);
        float k = r * r * r * dot / n;
        Vector512<float> vr = Vector512.Create(r), vk = Vector512.Create(-k);
        for (j = 0; j + 16 <= n; j += 16)
        {
            var gv = T.Load(g + j);
            var xv = T.Load(x + j);
            T.Store(dx + j, Vector512.FusedMultiplyAdd(vk, xv, vr * gv * Vector512.Load(w + j)));
            if (acc != null) Vector512.FusedMultiplyAdd(gv * xv, vr, Vector512.Load(acc + j)).Store(acc + j);
        }
        for (; j < n; j++)
        {
            float gj = T.Get(g + j), xj = T.Get(x + j);
            T.Set(dx + j, r * gj * w[j] - k * xj);
            if (acc != null) acc[j] += gj * xj * r;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Add(float* dst, float* src, int n)
    {
        int j = 0;
        for (; j + 16 <= n; j += 16) (Vector512.Load(dst + j) + Vector512.Load(src + j)).Store(dst + j);
        for (; j < n; j++) dst[j] += src[j];
    }
}
