using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftSharp.Kernels;

/// <summary>
/// The gated MLP's h = act(g) * u and its backward in one pass each over [rows, cols] fp32, AVX-512F, on libtorch's
/// OpenMP team in blocks of whole rows (elementwise: the same bits whichever thread runs a block). Both activations are
/// g * sigmoid(z): silu has z = g; PyTorch's gelu(approximate="tanh") = 0.5 g (1 + tanh(y)) = g * sigmoid(2y) with
/// y = sqrt(2/pi) (g + 0.044715 g^3). So act'(g) = s + g s (1 - s) z'(g) with s = sigmoid(z), recomputed from g in the
/// backward: dg = dh * u * act'(g), du = dh * act(g).
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

    public static void Forward(Activation act, float* g, float* u, long inStride, float* h, long rows, int cols, int threads)
    {
        nint gp = (nint)g, up = (nint)u, hp = (nint)h;
        ForEachBlock(rows, cols, threads, (r0, n) =>
        {
            for (long r = r0; r < r0 + n; r++)
                ForwardRow(act, (float*)gp + r * inStride, (float*)up + r * inStride, (float*)hp + r * cols, cols);
        });
    }

    public static void Backward(Activation act, float* g, float* u, long inStride, float* dh, float* dg, float* du, long rows, int cols, int threads)
    {
        nint gp = (nint)g, up = (nint)u, dhp = (nint)dh, dgp = (nint)dg, dup = (nint)du;
        ForEachBlock(rows, cols, threads, (r0, n) =>
        {
            for (long r = r0; r < r0 + n; r++)
                BackwardRow(act, (float*)gp + r * inStride, (float*)up + r * inStride, (float*)dhp + r * cols,
                    (float*)dgp + r * inStride, (float*)dup + r * inStride, cols);
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
    static void ForwardRow(Activation act, float* g, float* u, float* h, int cols)
    {
        int j = 0;
        for (; j + W <= cols; j += W)
        {
            var gv = Avx512F.LoadVector512(g + j);
            Avx512F.Store(h + j, gv * Gate(act, gv, out _) * Avx512F.LoadVector512(u + j));
        }
        if (j == cols) return;
        // The tail through a 16-lane buffer: the same arithmetic as the full vectors.
        float* tg = stackalloc float[W], tu = stackalloc float[W];
        int n = cols - j;
        Tail(g + j, tg, n); Tail(u + j, tu, n);
        var tv = Avx512F.LoadVector512(tg);
        Avx512F.Store(tg, tv * Gate(act, tv, out _) * Avx512F.LoadVector512(tu));
        new ReadOnlySpan<float>(tg, n).CopyTo(new Span<float>(h + j, n));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void BackwardRow(Activation act, float* g, float* u, float* dh, float* dg, float* du, int cols)
    {
        int j = 0;
        for (; j + W <= cols; j += W)
        {
            var (dgv, duv) = Grads(act, Avx512F.LoadVector512(g + j), Avx512F.LoadVector512(u + j), Avx512F.LoadVector512(dh + j));
            Avx512F.Store(dg + j, dgv);
            Avx512F.Store(du + j, duv);
        }
        if (j == cols) return;
        float* tg = stackalloc float[W], tu = stackalloc float[W], td = stackalloc float[W];
        int n = cols - j;
        Tail(g + j, tg, n); Tail(u + j, tu, n); Tail(dh + j, td, n);
        var (a, b) = Grads(act, Avx512F.LoadVector512(tg), Avx512F.LoadVector512(tu), Avx512F.LoadVector512(td));
        Avx512F.Store(tg, a); Avx512F.Store(tu, b);
        new ReadOnlySpan<float>(tg, n).CopyTo(new Span<float>(dg + j, n));
        new ReadOnlySpan<float>(tu, n).CopyTo(new Span<float>(du + j, n));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static (Vector512<float> Dg, Vector512<float> Du) Grads(Activation act, Vector512<float> g, Vector512<float> u, Vector512<float> dh)
    {
        var s = Gate(act, g, out var dz);
        var gs = g * s;
        // act'(g) = s + g s (1 - s) z'
        var da = Avx512F.FusedMultiplyAdd(gs * (Vector512<float>.One - s), dz, s);
        return (dh * u * da, dh * gs);
    }

    static void Tail(float* src, float* buf, int n)
    {
        new Span<float>(buf, W).Clear();
        new ReadOnlySpan<float>(src, n).CopyTo(new Span<float>(buf, n));
    }
}
