using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftSharp.Kernels;

/// <summary>
/// The gated MLP's h = act(g) * u and its backward in one pass each over [rows, cols], AVX-512F, on libtorch's
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

    const int W = 16;
    /// <summary>Elements per work item: a few hundred KiB of traffic, enough to amortise the hand-out.</summary>
    const int BlockElements = 16384;

    public static bool Supported => Avx512F.IsSupported;

    public static void Forward<T>(Activation act, T* g, T* u, long inStride, T* h, long rows, int cols, int threads) where T : unmanaged, IElement<T>
    {
        nint gp = (nint)g, up = (nint)u, hp = (nint)h;
        ForEachBlock(rows, cols, threads, (r0, n) =>
        {
            for (long r = r0; r < r0 + n; r++)
                ForwardRow(act, (T*)gp + r * inStride, (T*)up + r * inStride, (T*)hp + r * cols, cols);
        });
    }

    public static void Backward<T>(Activation act, T* g, T* u, long inStride, T* dh, T* dg, T* du, long rows, int cols, int threads) where T : unmanaged, IElement<T>
    {
        nint gp = (nint)g, up = (nint)u, dhp = (nint)dh, dgp = (nint)dg, dup = (nint)du;
        ForEachBlock(rows, cols, threads, (r0, n) =>
        {
            for (long r = r0; r < r0 + n; r++)
                BackwardRow(act, (T*)gp + r * inStride, (T*)up + r * inStride, (T*)dhp + r * cols,
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
    static Vector512<float> Gate(Activation act, Vector512<float> g, out Vector512<float> dz)
    {
        if (act == Activation.Silu) { dz = Vector512<float>.One; return VectorMath.Sigmoid(g); }
        // z = 2 sqrt(2/pi) (g + 0.044715 g^3), z' = 2 sqrt(2/pi) (1 + 3 * 0.044715 g^2)
        const float c = 1.5957691216057308f, k = 0.044715f;
        var g2 = g * g;
        dz = Avx512F.FusedMultiplyAdd(g2, Vector512.Create(3 * k * c), Vector512.Create(c));
        return VectorMath.Sigmoid(g * Avx512F.FusedMultiplyAdd(g2, Vector512.Create(k * c), Vector512.Create(c)));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ForwardRow<T>(Activation act, T* g, T* u, T* h, int cols) where T : unmanaged, IElement<T>
    {
        int j = 0;
        for (; j + W <= cols; j += W)
        {
            var gv = T.Load(g + j);
            T.Store(h + j, T.Round(gv * Gate(act, gv, out _)) * T.Load(u + j));
        }
        if (j == cols) return;
        // The tail through a 16-lane buffer: the same arithmetic as the full vectors.
        float* tg = stackalloc float[W], tu = stackalloc float[W];
        int n = cols - j;
        Tail(g + j, tg, n); Tail(u + j, tu, n);
        var tv = Avx512F.LoadVector512(tg);
        Avx512F.Store(tg, T.Round(tv * Gate(act, tv, out _)) * Avx512F.LoadVector512(tu));
        Untail(tg, h + j, n);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void BackwardRow<T>(Activation act, T* g, T* u, T* dh, T* dg, T* du, int cols) where T : unmanaged, IElement<T>
    {
        int j = 0;
        for (; j + W <= cols; j += W)
        {
            var (dgv, duv) = Grads<T>(act, T.Load(g + j), T.Load(u + j), T.Load(dh + j));
            T.Store(dg + j, dgv);
            T.Store(du + j, duv);
        }
        if (j == cols) return;
        float* tg = stackalloc float[W], tu = stackalloc float[W], td = stackalloc float[W];
        int n = cols - j;
        Tail(g + j, tg, n); Tail(u + j, tu, n); Tail(dh + j, td, n);
        var (a, b) = Grads<T>(act, Avx512F.LoadVector512(tg), Avx512F.LoadVector512(tu), Avx512F.LoadVector512(td));
        Avx512F.Store(tg, a); Avx512F.Store(tu, b);
        Untail(tg, dg + j, n);
        Untail(tu, du + j, n);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static (Vector512<float> Dg, Vector512<float> Du) Grads<T>(Activation act, Vector512<float> g, Vector512<float> u, Vector512<float> dh)
        where T : unmanaged, IElement<T>
    {
        var s = Gate(act, g, out var dz);
        var gs = g * s;
        // act'(g) = s + g s (1 - s) z'
        var da = Avx512F.FusedMultiplyAdd(gs * (Vector512<float>.One - s), dz, s);
        return (dh * u * da, dh * T.Round(gs));
    }

    /// <summary>n elements widened into a zeroed 16-float buffer.</summary>
    static void Tail<T>(T* src, float* buf, int n) where T : unmanaged, IElement<T>
    {
        new Span<float>(buf, W).Clear();
        for (int i = 0; i < n; i++) buf[i] = T.Get(src + i);
    }

    /// <summary>The first n floats of a tail buffer stored as elements (rounded as the full vectors are).</summary>
    static void Untail<T>(float* buf, T* dst, int n) where T : unmanaged, IElement<T>
    {
        for (int i = 0; i < n; i++) T.Set(dst + i, buf[i]);
    }
}
