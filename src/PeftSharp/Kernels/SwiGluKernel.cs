using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PeftSharp.Kernels;

/// <summary>
/// The gated MLP's h = act(g) * u and its backward in one pass each over [rows, cols], 16 lanes (AVX-512F) or 8 (AVX2 +
/// FMA; one body over <see cref="ILanes{V}"/>), on libtorch's
/// OpenMP team in blocks of whole rows (elementwise: the same bits whichever thread runs a block). Elements fp32
/// (<see cref="F32"/>) or bf16 (<see cref="Bf16"/>: widened on load, rounded to nearest even on store); arithmetic in
/// fp32. Both activations are g * sigmoid(z): silu has z = g; PyTorch's gelu(approximate="tanh") = 0.5 g (1 + tanh(y))
/// = g * sigmoid(2y) with y = sqrt(2/pi) (g + 0.044715 g^3). So act'(g) = s + g s (1 - s) z'(g) with s = sigmoid(z),
/// recomputed from g in the backward: dg = dh * u * act'(g), du = dh * act(g).
/// In bf16, act(g) is rounded to bf16 before the product, as HF's act_fn(gate) * up rounds it (the forward then differs
/// from libtorch's bf16 ops only by the sigmoid's last bits), du = dh * that rounded act(g) (its exact derivative), and
/// dg is rounded once (libtorch's chain also rounds dh * u before silu's backward).
/// g and u (and dg, du) share a row stride: [rows, cols] tensors of their own, or the two halves of Phi-3's fused
/// gate_up rows (stride 2 cols). h and dh are contiguous [rows, cols].
/// </summary>
internal static unsafe class SwiGluKernel
{
    public enum Activation { Silu, GeluTanh }

    /// <summary>The widest vector's lanes: the tail buffers' size.</summary>
    const int MaxLanes = 16;
    /// <summary>Elements per work item: a few hundred KiB of traffic, enough to amortise the hand-out.</summary>
    const int BlockElements = 16384;

    public static bool Supported => KernelLanes.Supported;

    public static void Forward<T>(Activation act, T* g, T* u, long inStride, T* h, long rows, int cols, int threads) where T : unmanaged, IElement<T>
    {
        if (KernelLanes.Wide) Forward<T, Lanes16, Vector512<float>>(act, g, u, inStride, h, rows, cols, threads);
        else Forward<T, Lanes8, Vector256<float>>(act, g, u, inStride, h, rows, cols, threads);
    }

    static void Forward<T, L, V>(Activation act, T* g, T* u, long inStride, T* h, long rows, int cols, int threads)
        where T : unmanaged, IElement<T> where L : ILanes<V> where V : unmanaged
    {
        nint gp = (nint)g, up = (nint)u, hp = (nint)h;
        ForEachBlock(rows, cols, threads, (r0, n) =>
        {
            for (long r = r0; r < r0 + n; r++)
                ForwardRow<T, L, V>(act, (T*)gp + r * inStride, (T*)up + r * inStride, (T*)hp + r * cols, cols);
        });
    }

    public static void Backward<T>(Activation act, T* g, T* u, long inStride, T* dh, T* dg, T* du, long rows, int cols, int threads) where T : unmanaged, IElement<T>
    {
        if (KernelLanes.Wide) Backward<T, Lanes16, Vector512<float>>(act, g, u, inStride, dh, dg, du, rows, cols, threads);
        else Backward<T, Lanes8, Vector256<float>>(act, g, u, inStride, dh, dg, du, rows, cols, threads);
    }

    static void Backward<T, L, V>(Activation act, T* g, T* u, long inStride, T* dh, T* dg, T* du, long rows, int cols, int threads)
        where T : unmanaged, IElement<T> where L : ILanes<V> where V : unmanaged
    {
        nint gp = (nint)g, up = (nint)u, dhp = (nint)dh, dgp = (nint)dg, dup = (nint)du;
        ForEachBlock(rows, cols, threads, (r0, n) =>
        {
            for (long r = r0; r < r0 + n; r++)
                BackwardRow<T, L, V>(act, (T*)gp + r * inStride, (T*)up + r * inStride, (T*)dhp + r * cols,
                    (T*)dgp + r * inStride, (T*)dup + r * inStride, cols);
        });
    }

    static void ForEachBlock(long rows, int cols, int threads, Action<long, long> block)
    {
        long per = Math.Max(1, BlockElements / Math.Max(1, cols));
        int blocks = (int)((rows + per - 1) / per);
        TorchThreads.For(blocks, threads, i => block(i * per, Math.Min(per, rows - i * per)));
    }

    /// <summary>s = sigmoid(z(g)) and z'(g) (1 for silu).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static V Gate<L, V>(Activation act, V g, out V dz) where L : ILanes<V> where V : unmanaged
    {
        if (act == Activation.Silu) { dz = L.One; return L.Sigmoid(g); }
        // z = 2 sqrt(2/pi) (g + 0.044715 g^3), z' = 2 sqrt(2/pi) (1 + 3 * 0.044715 g^2)
        const float c = 1.5957691216057308f, k = 0.044715f;
        var g2 = L.Mul(g, g);
        dz = L.Fma(g2, L.Create(3 * k * c), L.Create(c));
        return L.Sigmoid(L.Mul(g, L.Fma(g2, L.Create(k * c), L.Create(c))));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ForwardRow<T, L, V>(Activation act, T* g, T* u, T* h, int cols)
        where T : unmanaged, IElement<T> where L : ILanes<V> where V : unmanaged
    {
        int j = 0;
        for (; j + L.Count <= cols; j += L.Count)
        {
            var gv = T.Load<L, V>(g + j);
            T.Store<L, V>(h + j, L.Mul(T.Round<L, V>(L.Mul(gv, Gate<L, V>(act, gv, out _))), T.Load<L, V>(u + j)));
        }
        if (j == cols) return;
        // The tail through a one-vector buffer: the same arithmetic as the full vectors.
        float* tg = stackalloc float[MaxLanes], tu = stackalloc float[MaxLanes];
        int n = cols - j;
        Tail<T, L, V>(g + j, tg, n); Tail<T, L, V>(u + j, tu, n);
        var tv = L.Load(tg);
        L.Store(tg, L.Mul(T.Round<L, V>(L.Mul(tv, Gate<L, V>(act, tv, out _))), L.Load(tu)));
        Untail(tg, h + j, n);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void BackwardRow<T, L, V>(Activation act, T* g, T* u, T* dh, T* dg, T* du, int cols)
        where T : unmanaged, IElement<T> where L : ILanes<V> where V : unmanaged
    {
        int j = 0;
        for (; j + L.Count <= cols; j += L.Count)
        {
            var (dgv, duv) = Grads<T, L, V>(act, T.Load<L, V>(g + j), T.Load<L, V>(u + j), T.Load<L, V>(dh + j));
            T.Store<L, V>(dg + j, dgv);
            T.Store<L, V>(du + j, duv);
        }
        if (j == cols) return;
        float* tg = stackalloc float[MaxLanes], tu = stackalloc float[MaxLanes], td = stackalloc float[MaxLanes];
        int n = cols - j;
        Tail<T, L, V>(g + j, tg, n); Tail<T, L, V>(u + j, tu, n); Tail<T, L, V>(dh + j, td, n);
        var (a, b) = Grads<T, L, V>(act, L.Load(tg), L.Load(tu), L.Load(td));
        L.Store(tg, a); L.Store(tu, b);
        Untail(tg, dg + j, n);
        Untail(tu, du + j, n);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static (V Dg, V Du) Grads<T, L, V>(Activation act, V g, V u, V dh)
        where T : unmanaged, IElement<T> where L : ILanes<V> where V : unmanaged
    {
        var s = Gate<L, V>(act, g, out var dz);
        var gs = L.Mul(g, s);
        // act'(g) = s + g s (1 - s) z'
        var da = L.Fma(L.Mul(gs, L.Sub(L.One, s)), dz, s);
        return (L.Mul(L.Mul(dh, u), da), L.Mul(dh, T.Round<L, V>(gs)));
    }

    /// <summary>n (&lt; the lane count) elements widened into a zeroed one-vector buffer.</summary>
    static void Tail<T, L, V>(T* src, float* buf, int n) where T : unmanaged, IElement<T> where L : ILanes<V> where V : unmanaged
    {
        new Span<float>(buf, L.Count).Clear();
        for (int i = 0; i < n; i++) buf[i] = T.Get(src + i);
    }

    /// <summary>The first n floats of a tail buffer stored as elements (rounded as the full vectors are).</summary>
    static void Untail<T>(float* buf, T* dst, int n) where T : unmanaged, IElement<T>
    {
        for (int i = 0; i < n; i++) T.Set(dst + i, buf[i]);
    }
}
