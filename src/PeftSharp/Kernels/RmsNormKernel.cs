using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PeftSharp.Kernels;

/// <summary>
/// RMSNorm over contiguous rows in one pass each way, 16 lanes (AVX-512F) or 8 (AVX2 + FMA) with a scalar tail, so any
/// width works (one body over <see cref="ILanes{V}"/>; the bits depend on the lane count, not on the threads); x, y,
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
    /// <summary>Whether this machine runs the kernel's vectors in hardware: AVX-512F or AVX2 + FMA (else the model keeps the op chain).</summary>
    public static bool Supported => KernelLanes.Supported;

    /// <summary>Below this many elements one thread does it all (a parallel region costs more than the work).</summary>
    const long ParallelMin = 1 << 15;

    /// <summary>Rows per block: at least 16, and at most 64 blocks (the dw partials are blocks x width floats).</summary>
    static int RowsPerBlock(int rows) => Math.Max(16, (rows + 63) / 64);

    static int Threads(int rows, int width, int threads) => (long)rows * width < ParallelMin ? 1 : threads;

    /// <summary>y and rstd (null: not kept) from x [rows, width] and the effective weight w [width].</summary>
    public static void Forward<T>(T* x, float* w, T* y, float* rstd, int rows, int width, float eps, bool roundNormed, int threads) where T : unmanaged, IElement<T>
    {
        if (KernelLanes.Wide) Forward<T, Lanes16, Vector512<float>>(x, w, y, rstd, rows, width, eps, roundNormed, threads);
        else Forward<T, Lanes8, Vector256<float>>(x, w, y, rstd, rows, width, eps, roundNormed, threads);
    }

    /// <summary><see cref="Forward{T}"/> at a given width (tests run the 16-lane body through .NET's software Vector512).</summary>
    internal static void Forward<T, L, V>(T* x, float* w, T* y, float* rstd, int rows, int width, float eps, bool roundNormed, int threads)
        where T : unmanaged, IElement<T> where L : ILanes<V> where V : unmanaged
    {
        int per = RowsPerBlock(rows), blocks = (rows + per - 1) / per;
        nint xp = (nint)x, wp = (nint)w, yp = (nint)y, rp = (nint)rstd;
        TorchThreads.For(blocks, Threads(rows, width, threads), b =>
        {
            int end = Math.Min(rows, (b + 1) * per);
            for (int r = b * per; r < end; r++)
            {
                long off = (long)r * width;
                float s = ForwardRow<T, L, V>((T*)xp + off, (float*)wp, (T*)yp + off, width, eps, roundNormed);
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
        if (KernelLanes.Wide) Backward<T, Lanes16, Vector512<float>>(x, w, rstd, g, dx, dw, rows, width, threads);
        else Backward<T, Lanes8, Vector256<float>>(x, w, rstd, g, dx, dw, rows, width, threads);
    }

    /// <summary><see cref="Backward{T}"/> at a given width.</summary>
    internal static void Backward<T, L, V>(T* x, float* w, float* rstd, T* g, T* dx, float* dw, int rows, int width, int threads)
        where T : unmanaged, IElement<T> where L : ILanes<V> where V : unmanaged
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
                    BackwardRow<T, L, V>((T*)xp + off, (float*)wp, ((float*)rp)[r], (T*)gp + off, (T*)dxp + off, acc, width);
                }
            });
            if (dw == null) return;
            new Span<float>(dw, width).Clear();
            for (int b = 0; b < blocks; b++) Add<L, V>(dw, partial + (long)b * width, width);
        }
        finally { if (partial != null) System.Runtime.InteropServices.NativeMemory.AlignedFree(partial); }
    }

    // Optimised from the first call: tier-0 code of vector calls is ~10x slower and a short run may never leave it.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float ForwardRow<T, L, V>(T* x, float* w, T* y, int n, float eps, bool roundNormed)
        where T : unmanaged, IElement<T> where L : ILanes<V> where V : unmanaged
    {
        var a0 = L.Zero;
        var a1 = L.Zero;
        int j = 0;
        for (; j + 2 * L.Count <= n; j += 2 * L.Count)
        {
            var v0 = T.Load<L, V>(x + j);
            var v1 = T.Load<L, V>(x + j + L.Count);
            a0 = L.Fma(v0, v0, a0);
            a1 = L.Fma(v1, v1, a1);
        }
        if (j + L.Count <= n) { var v = T.Load<L, V>(x + j); a0 = L.Fma(v, v, a0); j += L.Count; }
        float ss = L.Sum(L.Add(a0, a1));
        for (int t = j; t < n; t++) ss += T.Get(x + t) * T.Get(x + t);
        float r = 1f / MathF.Sqrt(ss / n + eps);
        // (x * rstd) * w, rounded in that order as the op chain does.
        var vr = L.Create(r);
        for (j = 0; j + L.Count <= n; j += L.Count)
        {
            var v = L.Mul(T.Load<L, V>(x + j), vr);
            if (roundNormed) v = T.Round<L, V>(v);
            T.Store<L, V>(y + j, L.Mul(v, L.Load(w + j)));
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
    static void BackwardRow<T, L, V>(T* x, float* w, float r, T* g, T* dx, float* acc, int n)
        where T : unmanaged, IElement<T> where L : ILanes<V> where V : unmanaged
    {
        // mean(g * w * x): the one reduction of the backward.
        var a0 = L.Zero;
        int j = 0;
        for (; j + L.Count <= n; j += L.Count) a0 = L.Fma(L.Mul(T.Load<L, V>(g + j), L.Load(w + j)), T.Load<L, V>(x + j), a0);
        float dot = L.Sum(a0);
        for (int t = j; t < n; t++) dot += T.Get(g + t) * w[t] * T.Get(x + t);
        float k = r * r * r * dot / n;
        V vr = L.Create(r), vk = L.Create(-k);
        for (j = 0; j + L.Count <= n; j += L.Count)
        {
            var gv = T.Load<L, V>(g + j);
            var xv = T.Load<L, V>(x + j);
            T.Store<L, V>(dx + j, L.Fma(vk, xv, L.Mul(L.Mul(vr, gv), L.Load(w + j))));
            if (acc != null) L.Store(acc + j, L.Fma(L.Mul(gv, xv), vr, L.Load(acc + j)));
        }
        for (; j < n; j++)
        {
            float gj = T.Get(g + j), xj = T.Get(x + j);
            T.Set(dx + j, r * gj * w[j] - k * xj);
            if (acc != null) acc[j] += gj * xj * r;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Add<L, V>(float* dst, float* src, int n) where L : ILanes<V> where V : unmanaged
    {
        int j = 0;
        for (; j + L.Count <= n; j += L.Count) L.Store(dst + j, L.Add(L.Load(dst + j), L.Load(src + j)));
        for (; j < n; j++) dst[j] += src[j];
    }
}
