using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftSharp.Kernels;

/// <summary>
/// Exact causal softmax attention (fp32 arithmetic, fp32 or bf16 tensors; AVX-512, or AVX2 + FMA through the 8-lane leaves of CausalAttentionKernel.Avx2.cs) over one (batch, kv-head) work item at a time: the forward keeps the
/// row logsumexp, the backward recomputes the probabilities from it (flash-attention style), so nothing T x T is saved.
/// Only the causal blocks are computed. A query block of <see cref="QueryBlock"/> rows at a time: its scores
/// [block, keys up to the block's last row] live in a per-thread buffer (cache-sized at training lengths).
/// Two register-blocked micro-kernels (<see cref="Mul8"/>, 8 rows x 32 columns; <see cref="Mul4x64"/>) do every product: the scores with K^T
/// packed d-major, P V, dS K, and the transposed P^T dO, dS^T Q.
/// Work items run on libtorch's OpenMP team (<see cref="TorchThreads"/>); each item's arithmetic order is fixed, so the
/// result is the same bits run to run whatever thread takes it. The heads of one kv head are one item: GQA's dK/dV
/// sums need no atomics.
/// </summary>
/// <remarks>
/// Layout: every tensor is addressed as base + batch*sB + head*sH + row*sT + d (d contiguous), so q/k/v can be
/// [B, H, T, D] views of the projections' [B, T, H, D] output and the output can be written as [B, T, H, D] for o_proj.
/// </remarks>
internal static unsafe partial class CausalAttentionKernel
{
    /// <summary>Query rows per block.</summary>
    public const int QueryBlock = 128;
    const int R = 8, W = 32;
    /// <summary>How many rows ahead <see cref="Packed"/> prefetches its strided source.</summary>
    const int PrefetchRows = 6;

    /// <summary>
    /// True where the kernel runs: AVX-512F, or AVX2 + FMA (the 8-lane leaves of CausalAttentionKernel.Avx2.cs), and a
    /// head_dim in multiples of 32.
    /// </summary>
    public static bool Supports(long headDim) => KernelLanes.Supported && headDim % W == 0 && headDim > 0;

    /// <summary>
    /// A strided [B, heads, T, D] operand, fp32 or (<paramref name="Bf16"/>) bfloat16; strides in elements. bf16 inputs
    /// are widened to fp32 where the rows are packed, bf16 outputs are computed in fp32 scratch and rounded once on the
    /// store (round-to-nearest-even as libtorch converts).
    /// </summary>
    public readonly record struct Operand(nint Data, long BatchStride, long HeadStride, long RowStride, bool Bf16 = false)
    {
        /// <summary>An fp32 operand's row.</summary>
        public float* Row(long b, long h, long t) => (float*)Data + b * BatchStride + h * HeadStride + t * RowStride;

        /// <summary>A row's address whatever the element type.</summary>
        public byte* At(long b, long h, long t) => (byte*)Data + (b * BatchStride + h * HeadStride + t * RowStride) * (Bf16 ? 2 : 4);
    }

    /// <summary>
    /// Rotary position embedding applied inside the kernel ("rotate_half" over the whole head): cos/sin rows [B, T, D]
    /// (head stride 0), or <see cref="None"/> for q/k that arrive rotated.
    /// </summary>
    public readonly record struct Rotary(Operand Cos, Operand Sin)
    {
        public static Rotary None => default;
        public bool On => Cos.Data != 0;
    }

    /// <summary>Shapes of one call.</summary>
    public readonly record struct Shape(int Batch, int Heads, int KvHeads, int T, int D, float Scale)
    {
        public int Group => Heads / KvHeads;
        public int Padded => (T + W - 1) / W * W;
    }

    sealed class Scratch(int d, int tp)
    {
        public readonly float[] Kt = GC.AllocateUninitializedArray<float>(d * tp, pinned: true);
        public readonly float[] Vt = GC.AllocateUninitializedArray<float>(d * tp, pinned: true);
        public readonly float[] S = GC.AllocateUninitializedArray<float>(QueryBlock * tp, pinned: true);
        public readonly float[] DP = GC.AllocateUninitializedArray<float>(QueryBlock * tp, pinned: true);
        public readonly float[] Rows = GC.AllocateUninitializedArray<float>(tp, pinned: true);
        /// <summary>
        /// Rows [T, D] packed contiguous (rotated for q and k with rotary positions): q of one head, k, and v (forward)
        /// or dout of one head (backward). The tensors' rows are heads * D apart, a power of two in bytes at the usual
        /// shapes: a micro-kernel walking 256 of them hits a handful of L1 sets and misses all the way.
        /// </summary>
        public readonly float[] Qp = GC.AllocateUninitializedArray<float>(d * tp, pinned: true);
        public readonly float[] Kp = GC.AllocateUninitializedArray<float>(d * tp, pinned: true);
        public readonly float[] Xp = GC.AllocateUninitializedArray<float>(d * tp, pinned: true);
        /// <summary>fp32 results [T, D] before the one rounding of a bf16 output: o's block (forward), dq, dk, dv (backward).</summary>
        float[]? _dq, _dk, _dv;
        public float[] Dq => _dq ??= GC.AllocateUninitializedArray<float>(D * Tp, pinned: true);
        public float[] Dk => _dk ??= GC.AllocateUninitializedArray<float>(D * Tp, pinned: true);
        public float[] Dv => _dv ??= GC.AllocateUninitializedArray<float>(D * Tp, pinned: true);
        public readonly int D = d, Tp = tp;
    }

    [ThreadStatic] static Scratch? _scratch;

    /// <summary>
    /// The scratch's row stride for a call: the padded length plus one cache line. At the usual lengths the padded row
    /// is a power of two in bytes (256 keys = 1 KiB), and the micro-kernel walks these buffers down a column (K^T and
    /// V^T rows in the scores, a score column in P^T dO and dS^T Q): 64-128 rows 1 KiB apart fall in 4 of L1's 64 sets
    /// and miss every time; 1 KiB + 64 B spreads them over all sets. Columns past the length are never summed, so the
    /// result does not depend on the stride.
    /// </summary>
    static int Stride(Shape s) => s.Padded + 16;

    static Scratch ScratchFor(int d, int tp)
    {
        if (_scratch is { } s && s.D == d && s.Tp >= tp) return s;
        return _scratch = new Scratch(d, tp);
    }

    /// <summary>Frees this thread's buffers (rebuilt on the next call).</summary>
    public static void ReleaseScratch() => _scratch = null;

    /// <summary>
    /// Every (batch, kv head) item on the team, with the item this thread most likely takes next (index + threads: the
    /// team takes indices in turn and items cost the same; -1 past the end). Only a prefetch hint: a wrong guess costs
    /// some bandwidth, never a result.
    /// </summary>
    static void ForEachItem(Shape s, int threads, Action<int, int, int> item)
    {
        int count = s.Batch * s.KvHeads, step = Math.Max(1, Math.Min(threads, TorchThreads.Size));
        TorchThreads.For(count, threads, i => item(i / s.KvHeads, i % s.KvHeads, i + step < count ? i + step : -1));
    }

    /// <summary>
    /// Row t of x for (b, head) asked into L2 (prefetcht1): an item's strided input rows for the next item, issued a row
    /// at a time from the current item's row loops, so the next item's packing finds them near instead of in L3/DRAM
    /// (the packing was ~20% of the forward's samples at the bench shape, 10-14% more per item at B 4 than at B 1).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void PrefetchRow(Operand x, int b, int head, int t, int d)
    {
        byte* row = x.At(b, head, t);
        int bytes = d * (x.Bf16 ? 2 : 4);
        for (int l = 0; l < bytes; l += 64) Sse.Prefetch1(row + l);
    }

    /// <summary>out = softmax(scale q k^T + causal) v; lse [B, H, T] (contiguous) gets each row's logsumexp of the scaled scores.</summary>
    public static void Forward(Shape s, Operand q, Operand k, Operand v, Rotary rope, Operand o, float* lse, int threads)
    {
        nint lsePtr = (nint)lse;
        ForEachItem(s, threads, (b, g, next) => ForwardItem(s, q, k, v, rope, o, (float*)lsePtr, b, g, next));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ForwardItem(Shape s, Operand q, Operand k, Operand v, Rotary rope, Operand o, float* lse, int b, int g, int next)
    {
        int nb = next / s.KvHeads, ng = next % s.KvHeads;
        var sc = ScratchFor(s.D, Stride(s));
        fixed (float* kt = sc.Kt, sBuf = sc.S, qp = sc.Qp, kp = sc.Kp, vp = sc.Xp, ob = o.Bf16 ? sc.Dq : null)
        {
            k = Packed(k, rope, b, g, s, kp);
            v = Packed(v, Rotary.None, b, g, s, vp);
            PackTransposed(k, s, kt, sc.Tp);
            for (int hh = 0; hh < s.Group; hh++)
            {
                int h = g * s.Group + hh;
                var qh = Packed(q, rope, b, h, s, qp);
                float* rowLse = lse + ((long)b * s.Heads + h) * s.T;
                for (int i0 = 0; i0 < s.T; i0 += QueryBlock)
                {
                    int n = Math.Min(QueryBlock, s.T - i0);
                    ScoreBlock(s, qh.Row(b, h, i0), qh.RowStride, kt, sc.Tp, i0, n, sBuf);
                    for (int r = 0; r < n; r++)
                    {
                        SoftmaxRow(sBuf + (long)r * sc.Tp, i0 + r, s.Scale, sc.Tp, rowLse + i0 + r);
                        if (next < 0) continue;
                        // The next item's rows: its k and v over the first head's rows, its head hh's q.
                        if (hh == 0) { PrefetchRow(k, nb, ng, i0 + r, s.D); PrefetchRow(v, nb, ng, i0 + r, s.D); }
                        PrefetchRow(q, nb, ng * s.Group + hh, i0 + r, s.D);
                    }
                    // A bf16 output: the block in fp32 first, then rounded once.
                    float* oRows = o.Bf16 ? ob : o.Row(b, h, i0);
                    long ldo = o.Bf16 ? s.D : o.RowStride;
                    for (int d0 = 0; d0 < s.D; d0 += W)
                        MixCausal(sBuf, sc.Tp, n, i0, s.T, v.Row(b, g, 0) + d0, v.RowStride, oRows + d0, ldo);
                    if (o.Bf16) StoreRounded(ob, o, b, h, i0, n, s.D);
                }
            }
        }
    }

    /// <summary>
    /// dq, dk, dv (overwritten; dk/dv summed over the kv head's query heads) from dout, given the forward's inputs,
    /// output and lse.
    /// </summary>
    public static void Backward(Shape s, Operand q, Operand k, Operand v, Rotary rope, Operand o, float* lse, Operand dOut,
        Operand dq, Operand dk, Operand dv, int threads)
    {
        nint lsePtr = (nint)lse;
        ForEachItem(s, threads, (b, g, next) => BackwardItem(s, q, k, v, rope, o, (float*)lsePtr, dOut, dq, dk, dv, b, g, next));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void BackwardItem(Shape s, Operand q, Operand k, Operand v, Rotary rope, Operand o, float* lse, Operand dOut,
        Operand dq, Operand dk, Operand dv, int b, int g, int next)
    {
        int nb = next / s.KvHeads, ng = next % s.KvHeads;
        var sc = ScratchFor(s.D, Stride(s));
        fixed (float* kt = sc.Kt, vt = sc.Vt, pBuf = sc.S, dsBuf = sc.DP, delta = sc.Rows, qp = sc.Qp, kp = sc.Kp, dop = sc.Xp,
            dqb = dq.Bf16 ? sc.Dq : null, dkb = dk.Bf16 ? sc.Dk : null, dvb = dv.Bf16 ? sc.Dv : null)
        {
            // bf16 gradients: accumulated in fp32 [T, D] scratch, rounded once into the outputs at the end.
            Operand dq16 = dq, dk16 = dk, dv16 = dv;
            if (dq.Bf16) dq = new Operand((nint)dqb, 0, 0, s.D);
            if (dk.Bf16) dk = new Operand((nint)dkb, 0, 0, s.D);
            if (dv.Bf16) dv = new Operand((nint)dvb, 0, 0, s.D);
            k = Packed(k, rope, b, g, s, kp);
            PackTransposed(k, s, kt, sc.Tp);
            PackTransposed(Packed(v, Rotary.None, b, g, s, dop), s, vt, sc.Tp);   // dop is free until the first head
            for (int hh = 0; hh < s.Group; hh++)
            {
                int h = g * s.Group + hh;
                var qh = Packed(q, rope, b, h, s, qp);
                var dOh = Packed(dOut, Rotary.None, b, h, s, dop, o, delta);   // delta[t] = dout[t] . o[t]
                float* rowLse = lse + ((long)b * s.Heads + h) * s.T;
                for (int i0 = 0; i0 < s.T; i0 += QueryBlock)
                {
                    int n = Math.Min(QueryBlock, s.T - i0), keys = i0 + n;
                    ScoreBlock(s, qh.Row(b, h, i0), qh.RowStride, kt, sc.Tp, i0, n, pBuf);
                    ScoreBlock(s, dOh.Row(b, h, i0), dOh.RowStride, vt, sc.Tp, i0, n, dsBuf);
                    for (int r = 0; r < n; r++)
                    {
                        GradRow(pBuf + (long)r * sc.Tp, dsBuf + (long)r * sc.Tp, i0 + r, s.Scale, rowLse[i0 + r], delta[i0 + r], sc.Tp);
                        if (next < 0) continue;
                        // The next item's rows (see ForwardItem): k, v once, then each head's q, dout and o.
                        int nh = ng * s.Group + hh;
                        if (hh == 0) { PrefetchRow(k, nb, ng, i0 + r, s.D); PrefetchRow(v, nb, ng, i0 + r, s.D); }
                        PrefetchRow(q, nb, nh, i0 + r, s.D); PrefetchRow(dOut, nb, nh, i0 + r, s.D); PrefetchRow(o, nb, nh, i0 + r, s.D);
                    }
                    // dv[j] += sum over block rows i >= j of P[i, j] dout[i]; dk[j] += sum dS[i, j] q[i] (dS carries the scale).
                    // The first head's block i0 is the first to reach keys [i0, keys): those rows of dk/dv are written, not added to (no clearing pass).
                    int fresh = hh == 0 ? i0 : keys;
                    MixTransposed(pBuf, sc.Tp, n, i0, keys, fresh, s.D, dOh.Row(b, h, i0), dOh.RowStride, dv.Row(b, g, 0), dv.RowStride);
                    MixTransposed(dsBuf, sc.Tp, n, i0, keys, fresh, s.D, qh.Row(b, h, i0), qh.RowStride, dk.Row(b, g, 0), dk.RowStride);
                    // dq[i] = sum over j <= i of dS[i, j] k[j].
                    for (int d0 = 0; d0 < s.D; d0 += W)
                        MixCausal(dsBuf, sc.Tp, n, i0, s.T, k.Row(b, g, 0) + d0, k.RowStride, dq.Row(b, h, i0) + d0, dq.RowStride);
                }
                // dq, dk so far are gradients of the rotated q, k: rotate them back (the transpose of the rotation).
                if (rope.On) for (int t = 0; t < s.T; t++) Unrotate(dq.Row(b, h, t), rope, b, t, s.D);
                if (dq16.Bf16) StoreRounded(dqb, dq16, b, h, 0, s.T, s.D);
            }
            if (rope.On) for (int t = 0; t < s.T; t++) Unrotate(dk.Row(b, g, t), rope, b, t, s.D);
            if (dk16.Bf16) StoreRounded(dkb, dk16, b, g, 0, s.T, s.D);
            if (dv16.Bf16) StoreRounded(dvb, dv16, b, g, 0, s.T, s.D);
        }
    }

    /// <summary>
    /// x's rows for (b, head) copied (rotated where <paramref name="rope"/> is on) into <paramref name="buf"/> [T, D],
    /// addressed as an operand with zero batch/head strides. With <paramref name="dots"/>: dots[t] = row t . dotWith's
    /// row t (the backward's rowsum(dO O), taken while the packed row is in L1 and dotWith's strided rows prefetched).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static Operand Packed(Operand x, Rotary rope, int b, int head, Shape s, float* buf, Operand dotWith = default, float* dots = null)
    {
        int lines = s.D * (x.Bf16 ? 2 : 4) / 64, dotLines = s.D * (dotWith.Bf16 ? 2 : 4) / 64;
        for (int t = 0; t < s.T; t++)
        {
            // The rows are heads * D elements apart (2 KiB at the bench shape), a stride the hardware prefetchers did not
            // cover: Rotate and the row copies were ~15% of the kernel's perf samples, waiting on L2/L3. Ask a few rows ahead.
            if (t + PrefetchRows < s.T)
            {
                byte* ahead = x.At(b, head, t + PrefetchRows);
                for (int l = 0; l < lines; l++) Sse.Prefetch0(ahead + l * 64);
                if (dots != null)
                {
                    ahead = dotWith.At(b, head, t + PrefetchRows);
                    for (int l = 0; l < dotLines; l++) Sse.Prefetch0(ahead + l * 64);
                }
            }
            float* dst = buf + (long)t * s.D;
            byte* row = x.At(b, head, t);
            if (rope.On) Rotate(row, x.Bf16, dst, rope, b, t, s.D);
            else CopyRow(row, x.Bf16, dst, s.D);
            if (dots != null) dots[t] = Dot(dst, dotWith.At(b, head, t), dotWith.Bf16, s.D);
        }
        return new Operand((nint)buf, 0, 0, s.D);
    }

    /// <summary>A row of d elements as fp32 (<see cref="Packed"/> without rotary).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void CopyRow(byte* row, bool bf16, float* dst, int d)
    {
        if (!Avx512F.IsSupported) { CopyRow8(row, bf16, dst, d); return; }
        for (int j = 0; j < d; j += 16) Load(row, j, bf16).Store(dst + j);
    }

    /// <summary>16 elements from <paramref name="row"/> + j as fp32: a bf16 is the top half of its fp32 (widening is exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Load(byte* row, int j, bool bf16) => bf16
        ? VectorMath.WidenBf16((ushort*)row + j)
        : Avx512F.LoadVector512((float*)row + j);

    /// <summary>
    /// Rows [t0, t0 + n) of a bf16 operand from fp32 [n, D] rows, rounded as libtorch converts (<see cref="VectorMath.Bf16Bits(Vector512{float})"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void StoreRounded(float* src, Operand dst, int b, int head, int t0, int n, int d)
    {
        if (!Avx512F.IsSupported) { StoreRounded8(src, dst, b, head, t0, n, d); return; }
        for (int r = 0; r < n; r++)
        {
            ushort* o = (ushort*)dst.At(b, head, t0 + r);
            for (int j = 0; j < d; j += 16) VectorMath.StoreBf16(o + j, Avx512F.LoadVector512(src + (long)r * d + j));
        }
    }

    /// <summary>HF's x * cos + rotate_half(x) * sin: (x1 c1 - x2 s1, x2 c2 + x1 s2) over the halves of the head.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Rotate(byte* x, bool xb, float* dst, Rotary rope, int b, int t, int d)
    {
        if (!Avx512F.IsSupported) { Rotate8(x, xb, dst, rope, b, t, d); return; }
        byte* c = rope.Cos.At(b, 0, t), sn = rope.Sin.At(b, 0, t);
        bool cb = rope.Cos.Bf16, sb = rope.Sin.Bf16;
        int half = d / 2;
        for (int j = 0; j < half; j += 16)
        {
            var x1 = Load(x, j, xb);
            var x2 = Load(x, half + j, xb);
            (x1 * Load(c, j, cb) - x2 * Load(sn, j, sb)).Store(dst + j);
            (x2 * Load(c, half + j, cb) + x1 * Load(sn, half + j, sb)).Store(dst + half + j);
        }
    }

    /// <summary>The gradient through <see cref="Rotate"/>, in place: (g1 c1 + g2 s2, g2 c2 - g1 s1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Unrotate(float* g, Rotary rope, int b, int t, int d)
    {
        if (!Avx512F.IsSupported) { Unrotate8(g, rope, b, t, d); return; }
        byte* c = rope.Cos.At(b, 0, t), sn = rope.Sin.At(b, 0, t);
        bool cb = rope.Cos.Bf16, sb = rope.Sin.Bf16;
        int half = d / 2;
        for (int j = 0; j < half; j += 16)
        {
            var g1 = Avx512F.LoadVector512(g + j);
            var g2 = Avx512F.LoadVector512(g + half + j);
            (g1 * Load(c, j, cb) + g2 * Load(sn, half + j, sb)).Store(g + j);
            (g2 * Load(c, half + j, cb) - g1 * Load(sn, j, sb)).Store(g + half + j);
        }
    }

    /// <summary>
    /// dst[d * tp + t] = src[t * D + d] for src packed [T, D] (see <see cref="Packed"/>), zero for t in [T, tp): 16 x 16
    /// tiles transposed in registers (<see cref="Transpose16"/>), each written as 16 full-line stores (element-wise stores
    /// 1 KiB apart cost ~8 cycles each; the two 8-wide gathers per column this replaced were ~4% of the kernel's samples).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackTransposed(Operand src, Shape s, float* dst, int tp)
    {
        if (!Avx512F.IsSupported) { PackTransposed8(src, s, dst, tp); return; }
        float* x = (float*)src.Data;
        var tile = stackalloc Vector512<float>[16];
        int t0 = 0;
        for (; t0 + 16 <= s.T; t0 += 16)
            for (int d0 = 0; d0 < s.D; d0 += 16)
            {
                for (int r = 0; r < 16; r++) tile[r] = Avx512F.LoadVector512(x + (long)(t0 + r) * s.D + d0);
                Transpose16(tile);
                for (int r = 0; r < 16; r++) tile[r].Store(dst + (long)(d0 + r) * tp + t0);
            }
        for (; t0 < s.T; t0++)
            for (int d = 0; d < s.D; d++) dst[(long)d * tp + t0] = x[(long)t0 * s.D + d];
        for (int d = 0; d < s.D; d++) new Span<float>(dst + (long)d * tp + s.T, tp - s.T).Clear();
    }

    /// <summary>
    /// Swap masks of <see cref="Transpose16"/>: level s (1, 2, 4, 8) exchanges bit s between the row and the column
    /// index where they differ, pairing row i (bit s clear) with row i + s; after all four levels (i, j) sits at (j, i).
    /// Low[j] picks the new row i, High[j] the new row i + s, from the pair (indices 16+ = the second row).
    /// </summary>
    static readonly Vector512<int>[] SwapLow = [.. new[] { 1, 2, 4, 8 }.Select(sz => Vector512.Create(Enumerable.Range(0, 16).Select(j => (j & sz) == 0 ? j : 16 + j - sz).ToArray()))];
    static readonly Vector512<int>[] SwapHigh = [.. new[] { 1, 2, 4, 8 }.Select(sz => Vector512.Create(Enumerable.Range(0, 16).Select(j => (j & sz) == 0 ? j + sz : 16 + j).ToArray()))];

    /// <summary>A 16 x 16 fp32 tile (one row per vector) transposed in place: 4 levels of 16 two-source permutes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Transpose16(Vector512<float>* m)
    {
        for (int level = 0; level < 4; level++)
        {
            int sz = 1 << level;
            var lo = SwapLow[level];
            var hi = SwapHigh[level];
            for (int i = 0; i < 16; i++)
            {
                if ((i & sz) != 0) continue;
                var a = m[i];
                var b = m[i + sz];
                m[i] = Avx512F.PermuteVar16x32x2(a, lo, b);
                m[i + sz] = Avx512F.PermuteVar16x32x2(a, hi, b);
            }
        }
    }

    /// <summary>
    /// buf[r, j] = x[i0 + r] . y[j] (y given transposed, d-major, tp columns) for the block's n rows and every key
    /// block of 32 up to the row group's last row (later entries of a row are left as they are).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ScoreBlock(Shape s, float* x, long ldx, float* yt, int tp, int i0, int n, float* buf)
    {
        // Key blocks outer, row groups inner: one 32-key slice of y^T (D x 128 B, 8 KiB at D 64) stays in L1 while the
        // row groups that reach it pass over it; rows outer streamed all of y^T (68 KiB at T 256) from L2 per 8 rows.
        // Where a row group needs all 64 keys of a pair of 32-key blocks, two 4 x 64 tiles (Mul4x64) instead of two 8 x 32:
        // at this product's short sum (D terms) the wider tile runs ~12% faster (fewer broadcasts per FMA); the same
        // dot products in the same order, so the same bits.
        int groups = n / R * R;
        for (int c0 = 0; c0 < i0 + groups; c0 += 2 * W)
        {
            int behind = c0 - i0 - R + 1;   // row groups r with i0 + r + R > c0 reach this key block
            for (int g = behind <= 0 ? 0 : (behind + R - 1) / R * R; g < groups; g += R)
            {
                float* xg = x + g * ldx, cg = buf + (long)g * tp + c0;
                if (c0 + W < i0 + g + R)
                {
                    Mul4x64(xg, ldx, 1, s.D, yt + c0, tp, cg, tp, accumulate: false);
                    Mul4x64(xg + 4 * ldx, ldx, 1, s.D, yt + c0, tp, cg + 4L * tp, tp, accumulate: false);
                }
                else Mul8(xg, ldx, 1, s.D, yt + c0, tp, cg, tp, accumulate: false);
            }
        }
        int r = groups;
        for (; r < n; r++)
        {
            int keys = i0 + r + 1;
            for (int c0 = 0; c0 < keys; c0 += W) Mul1(x + r * ldx, 1, s.D, yt + c0, tp, buf + (long)r * tp + c0, accumulate: false);
        }
    }

    static readonly Vector512<int> Lanes = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);

    /// <summary>
    /// Row i of the scores (keys 0..i valid) becomes its softmax probabilities; entries past the diagonal are zero up to
    /// at least i + R - 1 (<see cref="ZeroPast"/>) so that 8-row micro-kernels reading past a row's diagonal add nothing.
    /// lse = logsumexp(scale * scores).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SoftmaxRow(float* row, int i, float scale, int tp, float* lse)
    {
        if (!Avx512F.IsSupported) { SoftmaxRow8(row, i, scale, tp, lse); return; }
        int valid = i + 1, full = valid & ~15, end = (valid + 15) & ~15;
        var vscale = Vector512.Create(scale);
        var limit = Vector512.Create(valid);
        var m = Vector512.Create(float.NegativeInfinity);
        for (int j = 0; j < full; j += 16) m = Avx512F.Max(m, Avx512F.LoadVector512(row + j));
        // The partial last vector with the entries past the diagonal as -inf (no scalar tail: rows are short per call).
        if (full < valid)
            m = Avx512F.Max(m, Vector512.ConditionalSelect(Vector512.LessThan(Lanes + Vector512.Create(full), limit).AsSingle(),
                Avx512F.LoadVector512(row + full), Vector512.Create(float.NegativeInfinity)));
        float max = HorizontalMax(m);
        var shift = Vector512.Create(-max * scale);
        var sum = Vector512<float>.Zero;
        for (int j = 0; j < end; j += 16)
        {
            var e = VectorMath.Exp(Avx512F.FusedMultiplyAdd(Avx512F.LoadVector512(row + j), vscale, shift));
            e = Vector512.ConditionalSelect(Vector512.LessThan(Lanes + Vector512.Create(j), limit).AsSingle(), e, Vector512<float>.Zero);
            sum += e;
            e.Store(row + j);
        }
        float total = Vector512.Sum(sum);
        var inv = Vector512.Create(1f / total);
        for (int j = 0; j < end; j += 16) (Avx512F.LoadVector512(row + j) * inv).Store(row + j);
        ZeroPast(row, end, tp);
        *lse = max * scale + MathF.Log(total);
    }

    /// <summary>
    /// Row i: p = exp(scale * scores - lse) (the forward's probabilities), then dS = p * (dP - delta) * scale written
    /// over dP; entries past the diagonal are zero in both, up to at least i + R - 1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void GradRow(float* p, float* dp, int i, float scale, float lse, float delta, int tp)
    {
        if (!Avx512F.IsSupported) { GradRow8(p, dp, i, scale, lse, delta, tp); return; }
        int valid = i + 1, end = (valid + 15) & ~15;
        var vscale = Vector512.Create(scale);
        var shift = Vector512.Create(-lse);
        var vdelta = Vector512.Create(delta);
        var limit = Vector512.Create(valid);
        for (int j = 0; j < end; j += 16)
        {
            var keep = Vector512.LessThan(Lanes + Vector512.Create(j), limit).AsSingle();
            var e = Vector512.ConditionalSelect(keep, VectorMath.Exp(Avx512F.FusedMultiplyAdd(Avx512F.LoadVector512(p + j), vscale, shift)), Vector512<float>.Zero);
            e.Store(p + j);
            (e * (Avx512F.LoadVector512(dp + j) - vdelta) * vscale).Store(dp + j);
        }
        ZeroPast(p, end, tp);
        ZeroPast(dp, end, tp);
    }

    /// <summary>
    /// Zeros row[end, end + 16) (end = the diagonal rounded up to 16, so it covers the R - 1 entries past it that the 8-row
    /// products read) in one store; within the row's stride (end &lt;= the padded length = tp - 16).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void ZeroPast(float* row, int end, int tp)
    {
        System.Diagnostics.Debug.Assert(end + 16 <= tp);
        Vector512<float>.Zero.Store(row + end);
    }

    static float HorizontalMax(Vector512<float> v)
    {
        var m = Vector256.Max(v.GetLower(), v.GetUpper());
        var m2 = Vector128.Max(m.GetLower(), m.GetUpper());
        float r = m2[0];
        for (int i = 1; i < 4; i++) r = Math.Max(r, m2[i]);
        return r;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float Dot(float* a, byte* b, bool bf16, int d)
    {
        if (!Avx512F.IsSupported) return Dot8(a, b, bf16, d);
        var acc = Vector512<float>.Zero;
        for (int k = 0; k < d; k += 16) acc = Avx512F.FusedMultiplyAdd(Avx512F.LoadVector512(a + k), Load(b, k, bf16), acc);
        return Vector512.Sum(acc);
    }

    /// <summary>
    /// out[i0 + r, 0:32] = sum over keys j &lt;= row of buf[r, j] y[j, 0:32], for the block's n rows (buf holds
    /// zeros past each row's diagonal up to R - 1 entries, so a group of 8 rows runs to its last row's keys).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void MixCausal(float* buf, int tp, int n, int i0, int t, float* y, long ldy, float* o, long ldo)
    {
        int groups = n / R * R;
        for (int g = 0; g < groups; g += R) Mul8(buf + (long)g * tp, tp, 1, Math.Min(i0 + g + R, t), y, ldy, o + g * ldo, ldo, accumulate: false);
        int r = groups;
        for (; r < n; r++) Mul1(buf + (long)r * tp, 1, i0 + r + 1, y, ldy, o + r * ldo, accumulate: false);
    }

    /// <summary>
    /// out[j, 0:d] += sum over the block's rows r with i0 + r &gt;= j of buf[r, j] x[i0 + r, 0:d], for keys j &lt; keys;
    /// keys from <paramref name="fresh"/> on (a multiple of 8) are written instead (their first contribution).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void MixTransposed(float* buf, int tp, int n, int i0, int keys, int fresh, int d, float* x, long ldx, float* o, long ldo)
    {
        // 64 columns at a time on 4-key tiles (Mul4x64: these sums are short, n - first terms), a last 32 on 8-key tiles.
        int d0 = 0;
        for (; d0 + 2 * W <= d; d0 += 2 * W)
        {
            int j = 0;
            for (; j + 4 <= keys; j += 4)
            {
                int first = Math.Max(0, j - i0);   // block rows before key j see it masked (zero)
                Mul4x64(buf + (long)first * tp + j, 1, tp, n - first, x + first * ldx + d0, ldx, o + j * ldo + d0, ldo, accumulate: j < fresh);
            }
            for (; j < keys; j++)   // the last keys (under 4), one at a time, both 32-column halves
            {
                MixTransposedKey(buf, tp, n, i0, j, fresh, x + d0, ldx, o + d0, ldo);
                MixTransposedKey(buf, tp, n, i0, j, fresh, x + d0 + W, ldx, o + d0 + W, ldo);
            }
        }
        if (d0 < d)
        {
            int j = 0;
            for (; j + R <= keys; j += R)
            {
                int first = Math.Max(0, j - i0);
                Mul8(buf + (long)first * tp + j, 1, tp, n - first, x + first * ldx + d0, ldx, o + j * ldo + d0, ldo, accumulate: j < fresh);
            }
            for (; j < keys; j++) MixTransposedKey(buf, tp, n, i0, j, fresh, x + d0, ldx, o + d0, ldo);
        }
    }

    /// <summary>One key's 32 columns of <see cref="MixTransposed"/>.</summary>
    static void MixTransposedKey(float* buf, int tp, int n, int i0, int j, int fresh, float* x, long ldx, float* o, long ldo)
    {
        int first = Math.Max(0, j - i0);
        Mul1(buf + (long)first * tp + j, tp, n - first, x + first * ldx, ldx, o + j * ldo, accumulate: j < fresh);
    }

    /// <summary>
    /// c[r, 0:32] (= or +=) sum over k &lt; count of a[r * ars + k * aks] y[k, 0:32] for 8 rows (see also <see cref="Mul4x64"/>).
    /// Scores are a = q rows (ars = row stride, aks = 1) times y = K^T packed d-major; P V, dS K take a = a score row
    /// (ars = tp, aks = 1), and the transposed P^T dO, dS^T Q read a score column (ars = 1, aks = tp).
    /// 16 accumulators + 2 loads of y + a broadcast per k: FMA-bound.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Mul8(float* a, long ars, long aks, int count, float* y, long ldy, float* c, long ldc, bool accumulate)
    {
        if (!Avx512F.IsSupported) { Mul8x32Avx2(a, ars, aks, count, y, ldy, c, ldc, accumulate); return; }
        float* c1 = c + ldc, c2 = c1 + ldc, c3 = c2 + ldc, c4 = c3 + ldc, c5 = c4 + ldc, c6 = c5 + ldc, c7 = c6 + ldc;
        Vector512<float> a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51, a60, a61, a70, a71;
        if (accumulate)
        {
            a00 = Avx512F.LoadVector512(c); a01 = Avx512F.LoadVector512(c + 16); a10 = Avx512F.LoadVector512(c1); a11 = Avx512F.LoadVector512(c1 + 16);
            a20 = Avx512F.LoadVector512(c2); a21 = Avx512F.LoadVector512(c2 + 16); a30 = Avx512F.LoadVector512(c3); a31 = Avx512F.LoadVector512(c3 + 16);
            a40 = Avx512F.LoadVector512(c4); a41 = Avx512F.LoadVector512(c4 + 16); a50 = Avx512F.LoadVector512(c5); a51 = Avx512F.LoadVector512(c5 + 16);
            a60 = Avx512F.LoadVector512(c6); a61 = Avx512F.LoadVector512(c6 + 16); a70 = Avx512F.LoadVector512(c7); a71 = Avx512F.LoadVector512(c7 + 16);
        }
        else
        {
            a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = a40 = a41 = a50 = a51 = a60 = a61 = a70 = a71 = Vector512<float>.Zero;
        }
        float* p1 = a + ars, p2 = p1 + ars, p3 = p2 + ars, p4 = p3 + ars, p5 = p4 + ars, p6 = p5 + ars, p7 = p6 + ars;
        for (long k = 0; k < count; k++)
        {
            float* yr = y + k * ldy;
            var y0 = Avx512F.LoadVector512(yr);
            var y1 = Avx512F.LoadVector512(yr + 16);
            long o = k * aks;
            var b = Vector512.Create(a[o]); a00 = Avx512F.FusedMultiplyAdd(b, y0, a00); a01 = Avx512F.FusedMultiplyAdd(b, y1, a01);
            b = Vector512.Create(p1[o]); a10 = Avx512F.FusedMultiplyAdd(b, y0, a10); a11 = Avx512F.FusedMultiplyAdd(b, y1, a11);
            b = Vector512.Create(p2[o]); a20 = Avx512F.FusedMultiplyAdd(b, y0, a20); a21 = Avx512F.FusedMultiplyAdd(b, y1, a21);
            b = Vector512.Create(p3[o]); a30 = Avx512F.FusedMultiplyAdd(b, y0, a30); a31 = Avx512F.FusedMultiplyAdd(b, y1, a31);
            b = Vector512.Create(p4[o]); a40 = Avx512F.FusedMultiplyAdd(b, y0, a40); a41 = Avx512F.FusedMultiplyAdd(b, y1, a41);
            b = Vector512.Create(p5[o]); a50 = Avx512F.FusedMultiplyAdd(b, y0, a50); a51 = Avx512F.FusedMultiplyAdd(b, y1, a51);
            b = Vector512.Create(p6[o]); a60 = Avx512F.FusedMultiplyAdd(b, y0, a60); a61 = Avx512F.FusedMultiplyAdd(b, y1, a61);
            b = Vector512.Create(p7[o]); a70 = Avx512F.FusedMultiplyAdd(b, y0, a70); a71 = Avx512F.FusedMultiplyAdd(b, y1, a71);
        }
        a00.Store(c); a01.Store(c + 16);
        a10.Store(c1); a11.Store(c1 + 16);
        a20.Store(c2); a21.Store(c2 + 16);
        a30.Store(c3); a31.Store(c3 + 16);
        a40.Store(c4); a41.Store(c4 + 16);
        a50.Store(c5); a51.Store(c5 + 16);
        a60.Store(c6); a61.Store(c6 + 16);
        a70.Store(c7); a71.Store(c7 + 16);
    }

    /// <summary>
    /// <see cref="Mul8"/>'s product on a 4 x 64 tile: c[r, 0:64] (= or +=) sum over k &lt; count of a[r * ars + k * aks]
    /// y[k, 0:64]. 16 accumulators, 4 loads of y and 4 broadcasts per 16 FMAs: at short sums (64 terms) ~107 vs ~96
    /// GFLOP/s for 8 x 32 in L1 on this Zen 4 (C, same instructions); equal from ~256 terms.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Mul4x64(float* a, long ars, long aks, int count, float* y, long ldy, float* c, long ldc, bool accumulate)
    {
        if (!Avx512F.IsSupported) { Mul4x64Avx2(a, ars, aks, count, y, ldy, c, ldc, accumulate); return; }
        float* c1 = c + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
        Vector512<float> a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33;
        if (accumulate)
        {
            a00 = Avx512F.LoadVector512(c); a01 = Avx512F.LoadVector512(c + 16); a02 = Avx512F.LoadVector512(c + 32); a03 = Avx512F.LoadVector512(c + 48);
            a10 = Avx512F.LoadVector512(c1); a11 = Avx512F.LoadVector512(c1 + 16); a12 = Avx512F.LoadVector512(c1 + 32); a13 = Avx512F.LoadVector512(c1 + 48);
            a20 = Avx512F.LoadVector512(c2); a21 = Avx512F.LoadVector512(c2 + 16); a22 = Avx512F.LoadVector512(c2 + 32); a23 = Avx512F.LoadVector512(c2 + 48);
            a30 = Avx512F.LoadVector512(c3); a31 = Avx512F.LoadVector512(c3 + 16); a32 = Avx512F.LoadVector512(c3 + 32); a33 = Avx512F.LoadVector512(c3 + 48);
        }
        else
        {
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = Vector512<float>.Zero;
        }
        float* p1 = a + ars, p2 = p1 + ars, p3 = p2 + ars;
        for (long k = 0; k < count; k++)
        {
            float* yr = y + k * ldy;
            var y0 = Avx512F.LoadVector512(yr);
            var y1 = Avx512F.LoadVector512(yr + 16);
            var y2 = Avx512F.LoadVector512(yr + 32);
            var y3 = Avx512F.LoadVector512(yr + 48);
            long o = k * aks;
            var b = Vector512.Create(a[o]);
            a00 = Avx512F.FusedMultiplyAdd(b, y0, a00); a01 = Avx512F.FusedMultiplyAdd(b, y1, a01); a02 = Avx512F.FusedMultiplyAdd(b, y2, a02); a03 = Avx512F.FusedMultiplyAdd(b, y3, a03);
            b = Vector512.Create(p1[o]);
            a10 = Avx512F.FusedMultiplyAdd(b, y0, a10); a11 = Avx512F.FusedMultiplyAdd(b, y1, a11); a12 = Avx512F.FusedMultiplyAdd(b, y2, a12); a13 = Avx512F.FusedMultiplyAdd(b, y3, a13);
            b = Vector512.Create(p2[o]);
            a20 = Avx512F.FusedMultiplyAdd(b, y0, a20); a21 = Avx512F.FusedMultiplyAdd(b, y1, a21); a22 = Avx512F.FusedMultiplyAdd(b, y2, a22); a23 = Avx512F.FusedMultiplyAdd(b, y3, a23);
            b = Vector512.Create(p3[o]);
            a30 = Avx512F.FusedMultiplyAdd(b, y0, a30); a31 = Avx512F.FusedMultiplyAdd(b, y1, a31); a32 = Avx512F.FusedMultiplyAdd(b, y2, a32); a33 = Avx512F.FusedMultiplyAdd(b, y3, a33);
        }
        a00.Store(c); a01.Store(c + 16); a02.Store(c + 32); a03.Store(c + 48);
        a10.Store(c1); a11.Store(c1 + 16); a12.Store(c1 + 32); a13.Store(c1 + 48);
        a20.Store(c2); a21.Store(c2 + 16); a22.Store(c2 + 32); a23.Store(c2 + 48);
        a30.Store(c3); a31.Store(c3 + 16); a32.Store(c3 + 32); a33.Store(c3 + 48);
    }

    /// <summary><see cref="Mul8"/> for one row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Mul1(float* a, long aks, int count, float* y, long ldy, float* c, bool accumulate)
    {
        if (!Avx512F.IsSupported) { Mul1Avx2(a, aks, count, y, ldy, c, accumulate); return; }
        Vector512<float> a0 = Vector512<float>.Zero, a1 = Vector512<float>.Zero;
        if (accumulate) { a0 = Avx512F.LoadVector512(c); a1 = Avx512F.LoadVector512(c + 16); }
        for (long k = 0; k < count; k++)
        {
            var b = Vector512.Create(a[k * aks]);
            a0 = Avx512F.FusedMultiplyAdd(b, Avx512F.LoadVector512(y + k * ldy), a0);
            a1 = Avx512F.FusedMultiplyAdd(b, Avx512F.LoadVector512(y + k * ldy + 16), a1);
        }
        a0.Store(c); a1.Store(c + 16);
    }
}
