using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftSharp.Kernels;

/// <summary>
/// The vector width the elementwise kernels (<see cref="RmsNormKernel"/>, <see cref="SwiGluKernel"/>,
/// <see cref="CrossEntropyKernel"/>) are written over: <see cref="Lanes16"/> (AVX-512F, Vector512) or <see cref="Lanes8"/>
/// (AVX2 + FMA, Vector256). Each kernel has one body, generic over the width and its vector type; the JIT compiles a
/// separate copy per struct instantiation and inlines these static calls, so the abstraction costs nothing and the
/// 16-lane copy is the same operations in the same order as the AVX-512-only code it replaced.
/// (C# has no associated types, so the vector type is a second type parameter.)
/// </summary>
internal unsafe interface ILanes<V> where V : unmanaged
{
    static abstract int Count { get; }
    static abstract V Zero { get; }
    static abstract V One { get; }
    static abstract V Create(float x);
    static abstract V Load(float* p);
    static abstract void Store(float* p, V v);
    static abstract V Add(V a, V b);
    static abstract V Sub(V a, V b);
    static abstract V Mul(V a, V b);
    static abstract V Neg(V a);
    /// <summary>a * b + c, one rounding.</summary>
    static abstract V Fma(V a, V b, V c);
    /// <summary>The instruction's max (vmaxps: the second operand where either is NaN), not Vector*.Max's IEEE maximum.</summary>
    static abstract V Max(V a, V b);
    static abstract float Sum(V v);
    static abstract float HorizontalMax(V v);
    /// <summary>v where lane &lt; n, else 0.</summary>
    static abstract V KeepFirst(V v, int n);
    static abstract V Exp(V x);
    static abstract V Sigmoid(V x);
    static abstract V WidenBf16(ushort* p);
    static abstract void StoreBf16(ushort* p, V v);
    /// <summary>Each lane rounded to the nearest bf16 (as fp32).</summary>
    static abstract V RoundBf16(V v);
}

/// <summary>Which width this CPU runs the elementwise kernels at.</summary>
internal static class KernelLanes
{
    /// <summary>16 lanes (AVX-512F): the 16-lane VectorMath uses Avx512F instructions, so this asks for them, not for
    /// Vector512.IsHardwareAccelerated (.NET may prefer 256-bit vectors on an AVX-512 CPU; the instructions still run).</summary>
    public static bool Wide => Avx512F.IsSupported;

    /// <summary>Either width in hardware: AVX-512F, or AVX2 + FMA (Zen 2/3, Intel client parts). Else the op chains run.</summary>
    public static bool Supported => Wide || (Avx2.IsSupported && Fma.IsSupported);
}

/// <summary>16 fp32 lanes (AVX-512F).</summary>
internal readonly struct Lanes16 : ILanes<Vector512<float>>
{
    public static int Count => 16;
    public static Vector512<float> Zero => Vector512<float>.Zero;
    public static Vector512<float> One => Vector512<float>.One;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Create(float x) => Vector512.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static unsafe Vector512<float> Load(float* p) => Vector512.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static unsafe void Store(float* p, Vector512<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Sub(Vector512<float> a, Vector512<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Mul(Vector512<float> a, Vector512<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Neg(Vector512<float> a) => -a;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Fma(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Max(Vector512<float> a, Vector512<float> b) => Avx512F.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector512<float> v) => Vector512.Sum(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HorizontalMax(Vector512<float> v)
    {
        var m = Avx.Max(v.GetLower(), v.GetUpper());
        var h = Sse.Max(m.GetLower(), m.GetUpper());
        h = Sse.Max(h, Sse.Shuffle(h, h, 0b01_00_11_10));
        h = Sse.Max(h, Sse.Shuffle(h, h, 0b10_11_00_01));
        return h.ToScalar();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> KeepFirst(Vector512<float> v, int n) => Vector512.ConditionalSelect(
        Vector512.LessThan(Vector512.Create(0f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), Vector512.Create((float)n)),
        v, Vector512<float>.Zero);

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Exp(Vector512<float> x) => VectorMath.Exp(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Sigmoid(Vector512<float> x) => VectorMath.Sigmoid(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static unsafe Vector512<float> WidenBf16(ushort* p) => VectorMath.WidenBf16(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static unsafe void StoreBf16(ushort* p, Vector512<float> v) => VectorMath.StoreBf16(p, v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> RoundBf16(Vector512<float> v) => (VectorMath.Bf16Bits(v) << 16).AsSingle();
}

/// <summary>8 fp32 lanes (AVX2 + FMA): the same operations as <see cref="Lanes16"/> on Vector256.</summary>
internal readonly struct Lanes8 : ILanes<Vector256<float>>
{
    public static int Count => 8;
    public static Vector256<float> Zero => Vector256<float>.Zero;
    public static Vector256<float> One => Vector256<float>.One;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Create(float x) => Vector256.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static unsafe Vector256<float> Load(float* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static unsafe void Store(float* p, Vector256<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Sub(Vector256<float> a, Vector256<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Mul(Vector256<float> a, Vector256<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Neg(Vector256<float> a) => -a;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Fma(Vector256<float> a, Vector256<float> b, Vector256<float> c) => System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Max(Vector256<float> a, Vector256<float> b) => Avx.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector256<float> v) => Vector256.Sum(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HorizontalMax(Vector256<float> v)
    {
        var h = Sse.Max(v.GetLower(), v.GetUpper());
        h = Sse.Max(h, Sse.Shuffle(h, h, 0b01_00_11_10));
        h = Sse.Max(h, Sse.Shuffle(h, h, 0b10_11_00_01));
        return h.ToScalar();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> KeepFirst(Vector256<float> v, int n) => Vector256.ConditionalSelect(
        Vector256.LessThan(Vector256.Create(0f, 1, 2, 3, 4, 5, 6, 7), Vector256.Create((float)n)), v, Vector256<float>.Zero);

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Exp(Vector256<float> x) => VectorMath.Exp(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Sigmoid(Vector256<float> x) => VectorMath.Sigmoid(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static unsafe Vector256<float> WidenBf16(ushort* p) => VectorMath.WidenBf16x8(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static unsafe void StoreBf16(ushort* p, Vector256<float> v) => VectorMath.StoreBf16(p, v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> RoundBf16(Vector256<float> v) => (VectorMath.Bf16Bits(v) << 16).AsSingle();
}
