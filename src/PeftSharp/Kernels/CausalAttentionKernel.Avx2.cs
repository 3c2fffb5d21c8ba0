using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftSharp.Kernels;

/// <summary>
/// The 8-lane (AVX2 + FMA) leaves of <see cref="CausalAttentionKernel"/> for CPUs without AVX-512 (Zen 3, client
/// Intel): the micro-kernels, the transpose, the softmax and gradient rows and the row loads/stores. The driver (items,
/// query blocks, packing, causal blocks, the 8-row groups and 32-column blocks) is the AVX-512 file's, unchanged: each
/// leaf there starts with <c>if (!Avx512F.IsSupported)</c> (a JIT-time constant, so the untaken width is dead code) and
/// comes here with the same contract. With 16 ymm registers the 8 x 32 and 4 x 64 tiles of the AVX-512 code (16 zmm
/// accumulators) do not fit: 8 x 32 is walked as two 6 x 16 sub-tiles and one 2 x 32, 4 x 64 as 4 x 24, 4 x 24 and
/// 4 x 16 (each with at least 8 accumulators, at most 16 live registers, no spills in the JIT's loops). Every output
/// element is still one FMA chain over k in the same order, so the products are the same bits as the AVX-512 path's;
/// only the softmax's max/sum reductions run over 8 lanes instead of 16.
/// Why a partial class and not one body over a width abstraction: the register tiling differs, not just the lane
/// count, and the AVX-512 leaves stay exactly as measured.
/// </summary>
internal static unsafe partial class CausalAttentionKernel
{
    static readonly Vector256<int> Lanes8 = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);

    /// <summary>8 elements from <paramref name="row"/> + j as fp32 (bf16 widened exactly).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Load8(byte* row, int j, bool bf16) => bf16
        ? VectorMath.WidenBf16x8((ushort*)row + j)
        : Avx.LoadVector256((float*)row + j);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void CopyRow8(byte* row, bool bf16, float* dst, int d)
    {
        for (int j = 0; j < d; j += 8) Load8(row, j, bf16).Store(dst + j);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void StoreRounded8(float* src, Operand dst, int b, int head, int t0, int n, int d)
    {
        for (int r = 0; r < n; r++)
        {
            ushort* o = (ushort*)dst.At(b, head, t0 + r);
            for (int j = 0; j < d; j += 8) VectorMath.StoreBf16(o + j, Avx.LoadVector256(src + (long)r * d + j));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Rotate8(byte* x, bool xb, float* dst, Rotary rope, int b, int t, int d)
    {
        byte* c = rope.Cos.At(b, 0, t), sn = rope.Sin.At(b, 0, t);
        bool cb = rope.Cos.Bf16, sb = rope.Sin.Bf16;
        int half = d / 2;
        for (int j = 0; j < half; j += 8)
        {
            var x1 = Load8(x, j, xb);
            var x2 = Load8(x, half + j, xb);
            (x1 * Load8(c, j, cb) - x2 * Load8(sn, j, sb)).Store(dst + j);
            (x2 * Load8(c, half + j, cb) + x1 * Load8(sn, half + j, sb)).Store(dst + half + j);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Unrotate8(float* g, Rotary rope, int b, int t, int d)
    {
        byte* c = rope.Cos.At(b, 0, t), sn = rope.Sin.At(b, 0, t);
        bool cb = rope.Cos.Bf16, sb = rope.Sin.Bf16;
        int half = d / 2;
        for (int j = 0; j < half; j += 8)
        {
            var g1 = Avx.LoadVector256(g + j);
            var g2 = Avx.LoadVector256(g + half + j);
            (g1 * Load8(c, j, cb) + g2 * Load8(sn, half + j, sb)).Store(g + j);
            (g2 * Load8(c, half + j, cb) - g1 * Load8(sn, j, sb)).Store(g + half + j);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float Dot8(float* a, byte* b, bool bf16, int d)
    {
        var acc = Vector256<float>.Zero;
        for (int k = 0; k < d; k += 8) acc = Fma.MultiplyAdd(Avx.LoadVector256(a + k), Load8(b, k, bf16), acc);
        return Vector256.Sum(acc);
    }

    /// <summary><see cref="PackTransposed"/> on 8 x 8 tiles (<see cref="Transpose8"/>), each written as 8 row stores.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackTransposed8(Operand src, Shape s, float* dst, int tp)
    {
        float* x = (float*)src.Data;
        int t0 = 0;
        for (; t0 + 8 <= s.T; t0 += 8)
            for (int d0 = 0; d0 < s.D; d0 += 8)
            {
                float* from = x + (long)t0 * s.D + d0;
                Transpose8(
                    Avx.LoadVector256(from), Avx.LoadVector256(from + s.D), Avx.LoadVector256(from + 2 * s.D), Avx.LoadVector256(from + 3 * s.D),
                    Avx.LoadVector256(from + 4 * s.D), Avx.LoadVector256(from + 5 * s.D), Avx.LoadVector256(from + 6 * s.D), Avx.LoadVector256(from + 7 * s.D),
                    dst + (long)d0 * tp + t0, tp);
            }
        for (; t0 < s.T; t0++)
            for (int d = 0; d < s.D; d++) dst[(long)d * tp + t0] = x[(long)t0 * s.D + d];
        for (int d = 0; d < s.D; d++) new Span<float>(dst + (long)d * tp + s.T, tp - s.T).Clear();
    }

    /// <summary>
    /// An 8 x 8 tile given as its rows stored transposed: out + c * ld gets column c. Pairs of rows interleaved
    /// (unpack), then pairs of pairs (shuffle), then the 128-bit halves exchanged (vperm2f128): the usual AVX sequence.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Transpose8(Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7, float* o, long ld)
    {
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var s0 = Avx.Shuffle(t0, t2, 0x44); var s1 = Avx.Shuffle(t0, t2, 0xEE);
        var s2 = Avx.Shuffle(t1, t3, 0x44); var s3 = Avx.Shuffle(t1, t3, 0xEE);
        var s4 = Avx.Shuffle(t4, t6, 0x44); var s5 = Avx.Shuffle(t4, t6, 0xEE);
        var s6 = Avx.Shuffle(t5, t7, 0x44); var s7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Permute2x128(s0, s4, 0x20).Store(o);
        Avx.Permute2x128(s1, s5, 0x20).Store(o + ld);
        Avx.Permute2x128(s2, s6, 0x20).Store(o + 2 * ld);
        Avx.Permute2x128(s3, s7, 0x20).Store(o + 3 * ld);
        Avx.Permute2x128(s0, s4, 0x31).Store(o + 4 * ld);
        Avx.Permute2x128(s1, s5, 0x31).Store(o + 5 * ld);
        Avx.Permute2x128(s2, s6, 0x31).Store(o + 6 * ld);
        Avx.Permute2x128(s3, s7, 0x31).Store(o + 7 * ld);
    }

    /// <summary>
    /// <see cref="SoftmaxRow"/> on 8 lanes: entries past the diagonal are zero up to the diagonal rounded up to 8, plus 8
    /// more (covers the R - 1 = 7 entries the 8-row products read past a row's diagonal).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SoftmaxRow8(float* row, int i, float scale, int tp, float* lse)
    {
        int valid = i + 1, full = valid & ~7, end = (valid + 7) & ~7;
        var vscale = Vector256.Create(scale);
        var limit = Vector256.Create(valid);
        var m = Vector256.Create(float.NegativeInfinity);
        for (int j = 0; j < full; j += 8) m = Avx.Max(m, Avx.LoadVector256(row + j));
        if (full < valid)
            m = Avx.Max(m, Vector256.ConditionalSelect(Vector256.LessThan(Lanes8 + Vector256.Create(full), limit).AsSingle(),
                Avx.LoadVector256(row + full), Vector256.Create(float.NegativeInfinity)));
        float max = HorizontalMax8(m);
        var shift = Vector256.Create(-max * scale);
        var sum = Vector256<float>.Zero;
        for (int j = 0; j < end; j += 8)
        {
            var e = VectorMath.Exp(Fma.MultiplyAdd(Avx.LoadVector256(row + j), vscale, shift));
            e = Vector256.ConditionalSelect(Vector256.LessThan(Lanes8 + Vector256.Create(j), limit).AsSingle(), e, Vector256<float>.Zero);
            sum += e;
            e.Store(row + j);
        }
        float total = Vector256.Sum(sum);
        var inv = Vector256.Create(1f / total);
        for (int j = 0; j < end; j += 8) (Avx.LoadVector256(row + j) * inv).Store(row + j);
        ZeroPast8(row, end, tp);
        *lse = max * scale + MathF.Log(total);
    }

    /// <summary><see cref="GradRow"/> on 8 lanes (zeros past the diagonal as <see cref="SoftmaxRow8"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void GradRow8(float* p, float* dp, int i, float scale, float lse, float delta, int tp)
    {
        int valid = i + 1, end = (valid + 7) & ~7;
        var vscale = Vector256.Create(scale);
        var shift = Vector256.Create(-lse);
        var vdelta = Vector256.Create(delta);
        var limit = Vector256.Create(valid);
        for (int j = 0; j < end; j += 8)
        {
            var keep = Vector256.LessThan(Lanes8 + Vector256.Create(j), limit).AsSingle();
            var e = Vector256.ConditionalSelect(keep, VectorMath.Exp(Fma.MultiplyAdd(Avx.LoadVector256(p + j), vscale, shift)), Vector256<float>.Zero);
            e.Store(p + j);
            (e * (Avx.LoadVector256(dp + j) - vdelta) * vscale).Store(dp + j);
        }
        ZeroPast8(p, end, tp);
        ZeroPast8(dp, end, tp);
    }

    /// <summary>Zeros row[end, end + 8): with end &gt;= i + 1 that covers entries i + 1 .. i + R - 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void ZeroPast8(float* row, int end, int tp)
    {
        System.Diagnostics.Debug.Assert(end + 8 <= tp);
        Vector256<float>.Zero.Store(row + end);
    }

    static float HorizontalMax8(Vector256<float> v)
    {
        var m = Vector128.Max(v.GetLower(), v.GetUpper());
        float r = m[0];
        for (int i = 1; i < 4; i++) r = Math.Max(r, m[i]);
        return r;
    }

    /// <summary>
    /// <see cref="Mul8"/>'s 8 x 32 tile: rows 0-5 as two 6 x 16 tiles (12 accumulators: the BLIS Zen shape), rows 6-7 as
    /// one 2 x 32 (8). Each piece keeps at least 8 FMA chains in flight (Zen 3: 2 pipes x 4 cycles of latency).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Mul8x32Avx2(float* a, long ars, long aks, int count, float* y, long ldy, float* c, long ldc, bool accumulate)
    {
        Mul6x16(a, ars, aks, count, y, ldy, c, ldc, accumulate);
        Mul6x16(a, ars, aks, count, y + 16, ldy, c + 16, ldc, accumulate);
        Mul2x32(a + 6 * ars, ars, aks, count, y, ldy, c + 6 * ldc, ldc, accumulate);
    }

    /// <summary><see cref="Mul4x64"/>'s tile as 4 x 24, 4 x 24 and 4 x 16 sub-tiles.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Mul4x64Avx2(float* a, long ars, long aks, int count, float* y, long ldy, float* c, long ldc, bool accumulate)
    {
        Mul4x24(a, ars, aks, count, y, ldy, c, ldc, accumulate);
        Mul4x24(a, ars, aks, count, y + 24, ldy, c + 24, ldc, accumulate);
        Mul4x16(a, ars, aks, count, y + 48, ldy, c + 48, ldc, accumulate);
    }

    /// <summary>
    /// c[r, 0:24] (= or +=) sum over k &lt; count of a[r * ars + k * aks] y[k, 0:24] for 4 rows: 12 accumulators, 3 loads
    /// of y and a broadcast, all 16 ymm registers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Mul4x24(float* a, long ars, long aks, int count, float* y, long ldy, float* c, long ldc, bool accumulate)
    {
        float* c1 = c + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
        Vector256<float> a00, a01, a02, a10, a11, a12, a20, a21, a22, a30, a31, a32;
        if (accumulate)
        {
            a00 = Avx.LoadVector256(c); a01 = Avx.LoadVector256(c + 8); a02 = Avx.LoadVector256(c + 16);
            a10 = Avx.LoadVector256(c1); a11 = Avx.LoadVector256(c1 + 8); a12 = Avx.LoadVector256(c1 + 16);
            a20 = Avx.LoadVector256(c2); a21 = Avx.LoadVector256(c2 + 8); a22 = Avx.LoadVector256(c2 + 16);
            a30 = Avx.LoadVector256(c3); a31 = Avx.LoadVector256(c3 + 8); a32 = Avx.LoadVector256(c3 + 16);
        }
        else
        {
            a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = a30 = a31 = a32 = Vector256<float>.Zero;
        }
        long r2 = 2 * ars, r3 = 3 * ars;
        float* yr = y, ak = a;
        for (int k = 0; k < count; k++, yr += ldy, ak += aks)
        {
            var y0 = Avx.LoadVector256(yr);
            var y1 = Avx.LoadVector256(yr + 8);
            var y2 = Avx.LoadVector256(yr + 16);
            var b = Vector256.Create(ak[0]); a00 = Fma.MultiplyAdd(b, y0, a00); a01 = Fma.MultiplyAdd(b, y1, a01); a02 = Fma.MultiplyAdd(b, y2, a02);
            b = Vector256.Create(ak[ars]); a10 = Fma.MultiplyAdd(b, y0, a10); a11 = Fma.MultiplyAdd(b, y1, a11); a12 = Fma.MultiplyAdd(b, y2, a12);
            b = Vector256.Create(ak[r2]); a20 = Fma.MultiplyAdd(b, y0, a20); a21 = Fma.MultiplyAdd(b, y1, a21); a22 = Fma.MultiplyAdd(b, y2, a22);
            b = Vector256.Create(ak[r3]); a30 = Fma.MultiplyAdd(b, y0, a30); a31 = Fma.MultiplyAdd(b, y1, a31); a32 = Fma.MultiplyAdd(b, y2, a32);
        }
        a00.Store(c); a01.Store(c + 8); a02.Store(c + 16);
        a10.Store(c1); a11.Store(c1 + 8); a12.Store(c1 + 16);
        a20.Store(c2); a21.Store(c2 + 8); a22.Store(c2 + 16);
        a30.Store(c3); a31.Store(c3 + 8); a32.Store(c3 + 16);
    }

    // The sub-tiles below step pointers (a by aks, y by ldy) instead of indexing by k: two multiplies less per k, in a
    // loop whose 8-12 FMAs take 4-6 cycles and which is otherwise near Zen 3's 6 ops per cycle of dispatch.

    /// <summary>
    /// c[r, 0:16] (= or +=) sum over k &lt; count of a[r * ars + k * aks] y[k, 0:16] for 6 rows: 12 ymm accumulators, 2
    /// loads of y, 1 broadcast register (15 live; the JIT's code has no spills in the loop).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Mul6x16(float* a, long ars, long aks, int count, float* y, long ldy, float* c, long ldc, bool accumulate)
    {
        float* c1 = c + ldc, c2 = c1 + ldc, c3 = c2 + ldc, c4 = c3 + ldc, c5 = c4 + ldc;
        Vector256<float> a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51;
        if (accumulate)
        {
            a00 = Avx.LoadVector256(c); a01 = Avx.LoadVector256(c + 8); a10 = Avx.LoadVector256(c1); a11 = Avx.LoadVector256(c1 + 8);
            a20 = Avx.LoadVector256(c2); a21 = Avx.LoadVector256(c2 + 8); a30 = Avx.LoadVector256(c3); a31 = Avx.LoadVector256(c3 + 8);
            a40 = Avx.LoadVector256(c4); a41 = Avx.LoadVector256(c4 + 8); a50 = Avx.LoadVector256(c5); a51 = Avx.LoadVector256(c5 + 8);
        }
        else
        {
            a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = a40 = a41 = a50 = a51 = Vector256<float>.Zero;
        }
        long r2 = 2 * ars, r3 = 3 * ars, r4 = 4 * ars, r5 = 5 * ars;
        float* yr = y, ak = a;
        for (int k = 0; k < count; k++, yr += ldy, ak += aks)
        {
            var y0 = Avx.LoadVector256(yr);
            var y1 = Avx.LoadVector256(yr + 8);
            var b = Vector256.Create(ak[0]); a00 = Fma.MultiplyAdd(b, y0, a00); a01 = Fma.MultiplyAdd(b, y1, a01);
            b = Vector256.Create(ak[ars]); a10 = Fma.MultiplyAdd(b, y0, a10); a11 = Fma.MultiplyAdd(b, y1, a11);
            b = Vector256.Create(ak[r2]); a20 = Fma.MultiplyAdd(b, y0, a20); a21 = Fma.MultiplyAdd(b, y1, a21);
            b = Vector256.Create(ak[r3]); a30 = Fma.MultiplyAdd(b, y0, a30); a31 = Fma.MultiplyAdd(b, y1, a31);
            b = Vector256.Create(ak[r4]); a40 = Fma.MultiplyAdd(b, y0, a40); a41 = Fma.MultiplyAdd(b, y1, a41);
            b = Vector256.Create(ak[r5]); a50 = Fma.MultiplyAdd(b, y0, a50); a51 = Fma.MultiplyAdd(b, y1, a51);
        }
        a00.Store(c); a01.Store(c + 8);
        a10.Store(c1); a11.Store(c1 + 8);
        a20.Store(c2); a21.Store(c2 + 8);
        a30.Store(c3); a31.Store(c3 + 8);
        a40.Store(c4); a41.Store(c4 + 8);
        a50.Store(c5); a51.Store(c5 + 8);
    }

    /// <summary>The 6 x 16 product for 2 rows x 32 columns: 8 accumulators, 4 loads of y, 2 broadcasts per k.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Mul2x32(float* a, long ars, long aks, int count, float* y, long ldy, float* c, long ldc, bool accumulate)
    {
        float* c1 = c + ldc;
        Vector256<float> a00, a01, a02, a03, a10, a11, a12, a13;
        if (accumulate)
        {
            a00 = Avx.LoadVector256(c); a01 = Avx.LoadVector256(c + 8); a02 = Avx.LoadVector256(c + 16); a03 = Avx.LoadVector256(c + 24);
            a10 = Avx.LoadVector256(c1); a11 = Avx.LoadVector256(c1 + 8); a12 = Avx.LoadVector256(c1 + 16); a13 = Avx.LoadVector256(c1 + 24);
        }
        else
        {
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = Vector256<float>.Zero;
        }
        float* yr = y, ak = a;
        for (int k = 0; k < count; k++, yr += ldy, ak += aks)
        {
            var y0 = Avx.LoadVector256(yr);
            var y1 = Avx.LoadVector256(yr + 8);
            var y2 = Avx.LoadVector256(yr + 16);
            var y3 = Avx.LoadVector256(yr + 24);
            var b = Vector256.Create(ak[0]);
            a00 = Fma.MultiplyAdd(b, y0, a00); a01 = Fma.MultiplyAdd(b, y1, a01); a02 = Fma.MultiplyAdd(b, y2, a02); a03 = Fma.MultiplyAdd(b, y3, a03);
            b = Vector256.Create(ak[ars]);
            a10 = Fma.MultiplyAdd(b, y0, a10); a11 = Fma.MultiplyAdd(b, y1, a11); a12 = Fma.MultiplyAdd(b, y2, a12); a13 = Fma.MultiplyAdd(b, y3, a13);
        }
        a00.Store(c); a01.Store(c + 8); a02.Store(c + 16); a03.Store(c + 24);
        a10.Store(c1); a11.Store(c1 + 8); a12.Store(c1 + 16); a13.Store(c1 + 24);
    }

    /// <summary>
    /// c[r, 0:16] (= or +=) sum over k &lt; count of a[r * ars + k * aks] y[k, 0:16] for 4 rows: 8 ymm accumulators
    /// (just enough chains in flight), 2 loads of y, 1 broadcast per row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Mul4x16(float* a, long ars, long aks, int count, float* y, long ldy, float* c, long ldc, bool accumulate)
    {
        float* c1 = c + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
        Vector256<float> a00, a01, a10, a11, a20, a21, a30, a31;
        if (accumulate)
        {
            a00 = Avx.LoadVector256(c); a01 = Avx.LoadVector256(c + 8); a10 = Avx.LoadVector256(c1); a11 = Avx.LoadVector256(c1 + 8);
            a20 = Avx.LoadVector256(c2); a21 = Avx.LoadVector256(c2 + 8); a30 = Avx.LoadVector256(c3); a31 = Avx.LoadVector256(c3 + 8);
        }
        else
        {
            a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = Vector256<float>.Zero;
        }
        long r2 = 2 * ars, r3 = 3 * ars;
        float* yr = y, ak = a;
        for (int k = 0; k < count; k++, yr += ldy, ak += aks)
        {
            var y0 = Avx.LoadVector256(yr);
            var y1 = Avx.LoadVector256(yr + 8);
            var b = Vector256.Create(ak[0]); a00 = Fma.MultiplyAdd(b, y0, a00); a01 = Fma.MultiplyAdd(b, y1, a01);
            b = Vector256.Create(ak[ars]); a10 = Fma.MultiplyAdd(b, y0, a10); a11 = Fma.MultiplyAdd(b, y1, a11);
            b = Vector256.Create(ak[r2]); a20 = Fma.MultiplyAdd(b, y0, a20); a21 = Fma.MultiplyAdd(b, y1, a21);
            b = Vector256.Create(ak[r3]); a30 = Fma.MultiplyAdd(b, y0, a30); a31 = Fma.MultiplyAdd(b, y1, a31);
        }
        a00.Store(c); a01.Store(c + 8);
        a10.Store(c1); a11.Store(c1 + 8);
        a20.Store(c2); a21.Store(c2 + 8);
        a30.Store(c3); a31.Store(c3 + 8);
    }

    /// <summary><see cref="Mul1"/> on 8 lanes: one row x 32 columns, 4 accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Mul1Avx2(float* a, long aks, int count, float* y, long ldy, float* c, bool accumulate)
    {
        Vector256<float> a0 = Vector256<float>.Zero, a1 = Vector256<float>.Zero, a2 = Vector256<float>.Zero, a3 = Vector256<float>.Zero;
        if (accumulate) { a0 = Avx.LoadVector256(c); a1 = Avx.LoadVector256(c + 8); a2 = Avx.LoadVector256(c + 16); a3 = Avx.LoadVector256(c + 24); }
        for (long k = 0; k < count; k++)
        {
            float* yr = y + k * ldy;
            var b = Vector256.Create(a[k * aks]);
            a0 = Fma.MultiplyAdd(b, Avx.LoadVector256(yr), a0);
            a1 = Fma.MultiplyAdd(b, Avx.LoadVector256(yr + 8), a1);
            a2 = Fma.MultiplyAdd(b, Avx.LoadVector256(yr + 16), a2);
            a3 = Fma.MultiplyAdd(b, Avx.LoadVector256(yr + 24), a3);
        }
        a0.Store(c); a1.Store(c + 8); a2.Store(c + 16); a3.Store(c + 24);
    }
}
