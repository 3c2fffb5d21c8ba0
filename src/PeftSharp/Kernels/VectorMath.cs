using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftSharp.Kernels;

/// <summary>
/// Elementwise functions on 16 fp32 lanes (AVX-512F) and 8 (AVX2 + FMA: the same algorithms, overloads on
/// Vector256) shared by the kernels.
/// </summary>
internal static class VectorMath
{
    /// <summary>
    /// e^x, x clamped to [-87, 88] (no inf, no denormals): 2^n e^r with n = round(x log2 e), |r| &lt;= ln2/2 by a
    /// two-part ln 2, e^r by its degree-7 Taylor polynomial (relative error ~1e-8 before rounding), 2^n through the
    /// exponent bits. The attention kernel's softmax, the SwiGLU activations and the loss use it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        x = Avx512F.Max(Avx512F.Min(x, Vector512.Create(88f)), Vector512.Create(-87f));
        var n = Avx512F.RoundScale(x * Vector512.Create(1.44269504f), 0x08);
        var r = Avx512F.FusedMultiplyAdd(n, Vector512.Create(-0.693145751953125f), x);
        r = Avx512F.FusedMultiplyAdd(n, Vector512.Create(-1.428606765330187e-06f), r);
        var p = Vector512.Create(1f / 5040);
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(1f / 720));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(1f / 120));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(1f / 24));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(1f / 6));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(0.5f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512<float>.One);
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512<float>.One);
        var pow = Vector512.ShiftLeft(Avx512F.ConvertToVector512Int32(n) + Vector512.Create(127), 23).AsSingle();
        return p * pow;
    }

    /// <summary>1 / (1 + e^-x); saturates to 0 / 1 smoothly through Exp's clamp.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Sigmoid(Vector512<float> x) => Reciprocal(Vector512<float>.One + Exp(-x));

    /// <summary>
    /// 1 / d for d in [1, 2^127]: the 14-bit estimate and one Newton step (error ~2^-28 before rounding), several times
    /// the throughput of a 16-lane division.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Reciprocal(Vector512<float> d)
    {
        var r = Avx512F.Reciprocal14(d);
        return Avx512F.FusedMultiplyAdd(r, Avx512F.FusedMultiplyAddNegated(d, r, Vector512<float>.One), r);
    }

    /// <summary>16 bf16 values at <paramref name="p"/> as fp32: a bf16 is the top half of its fp32 (widening is exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector512<float> WidenBf16(ushort* p) =>
        Vector512.ShiftLeft(Avx512F.ConvertToVector512UInt32(Vector256.Load(p)), 16).AsSingle();

    /// <summary>
    /// fp32 -> bf16 bits in the low half of each lane, rounded to nearest even as libtorch converts (c10::BFloat16): a
    /// NaN becomes the quiet NaN 0x7FC0 (the rounding carry could turn it into an infinity or a zero).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> Bf16Bits(Vector512<float> f)
    {
        var u = f.AsUInt32();
        var rounded = (u + Vector512.Create(0x7FFFu) + ((u >> 16) & Vector512<uint>.One)) >> 16;
        return Vector512.ConditionalSelect(Vector512.Equals(f, f).AsUInt32(), rounded, Vector512.Create(0x7FC0u));
    }

    /// <summary>One fp32 -> bf16 bits, as <see cref="Bf16Bits(Vector512{float})"/>.</summary>
    public static ushort Bf16Bits(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        return float.IsNaN(f) ? (ushort)0x7FC0 : (ushort)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
    }

    /// <summary>16 fp32 values rounded to bf16 and stored at <paramref name="p"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void StoreBf16(ushort* p, Vector512<float> f) => Avx512F.ConvertToVector256UInt16(Bf16Bits(f)).Store(p);

    // ---- 8 lanes (AVX2 + FMA): the same algorithms as the 16-lane versions above, for CPUs without AVX-512 ----

    /// <summary>e^x on 8 lanes: the algorithm of <see cref="Exp(Vector512{float})"/> (same constants and steps).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> x)
    {
        x = Avx.Max(Avx.Min(x, Vector256.Create(88f)), Vector256.Create(-87f));
        var n = Avx.RoundToNearestInteger(x * Vector256.Create(1.44269504f));
        var r = Fma.MultiplyAdd(n, Vector256.Create(-0.693145751953125f), x);
        r = Fma.MultiplyAdd(n, Vector256.Create(-1.428606765330187e-06f), r);
        var p = Vector256.Create(1f / 5040);
        p = Fma.MultiplyAdd(p, r, Vector256.Create(1f / 720));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(1f / 120));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(1f / 24));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(1f / 6));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(0.5f));
        p = Fma.MultiplyAdd(p, r, Vector256<float>.One);
        p = Fma.MultiplyAdd(p, r, Vector256<float>.One);
        var pow = Vector256.ShiftLeft(Avx.ConvertToVector256Int32(n) + Vector256.Create(127), 23).AsSingle();
        return p * pow;
    }

    /// <summary>1 / (1 + e^-x) on 8 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Sigmoid(Vector256<float> x) => Reciprocal(Vector256<float>.One + Exp(-x));

    /// <summary>
    /// 1 / d for d in [1, 2^127] on 8 lanes: AVX's 12-bit estimate and two Newton steps (one step from 12 bits leaves
    /// ~2^-22, short of the 16-lane version's 14-bit estimate + one step), still well ahead of an 8-lane division.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Reciprocal(Vector256<float> d)
    {
        var r = Avx.Reciprocal(d);
        r = Fma.MultiplyAdd(r, Fma.MultiplyAddNegated(d, r, Vector256<float>.One), r);
        return Fma.MultiplyAdd(r, Fma.MultiplyAddNegated(d, r, Vector256<float>.One), r);
    }

    /// <summary>8 bf16 values at <paramref name="p"/> as fp32 (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector256<float> WidenBf16x8(ushort* p) =>
        Vector256.ShiftLeft(Avx2.ConvertToVector256Int32(Vector128.Load(p)), 16).AsSingle();

    /// <summary>fp32 -> bf16 bits on 8 lanes, as <see cref="Bf16Bits(Vector512{float})"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> Bf16Bits(Vector256<float> f)
    {
        var u = f.AsUInt32();
        var rounded = (u + Vector256.Create(0x7FFFu) + ((u >> 16) & Vector256<uint>.One)) >> 16;
        return Vector256.ConditionalSelect(Vector256.Equals(f, f).AsUInt32(), rounded, Vector256.Create(0x7FC0u));
    }

    /// <summary>8 fp32 values rounded to bf16 and stored at <paramref name="p"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void StoreBf16(ushort* p, Vector256<float> f)
    {
        // Each lane holds a value <= 0xFFFF, so the saturating pack of the two 128-bit halves is exact and in order.
        var bits = Bf16Bits(f).AsInt32();
        Sse41.PackUnsignedSaturate(bits.GetLower(), bits.GetUpper()).Store(p);
    }
}
