using System.Runtime.Intrinsics;

namespace PeftSharp.Kernels;

/// <summary>How a kernel (<see cref="RmsNormKernel"/>, <see cref="SwiGluKernel"/>) reads and writes one element type as fp32 (16 lanes or one).</summary>
internal unsafe interface IElement<T> where T : unmanaged
{
    static abstract Vector512<float> Load(T* p);
    static abstract void Store(T* p, Vector512<float> v);
    static abstract float Get(T* p);
    static abstract void Set(T* p, float v);
    /// <summary>The value the element type would hold (identity for fp32).</summary>
    static abstract Vector512<float> Round(Vector512<float> v);
    static abstract float Round(float v);
}

/// <summary>fp32 elements.</summary>
internal readonly struct F32 : IElement<F32>
{
#pragma warning disable CS0169   // never read: it gives the struct its element's size, so F32* steps 4 bytes
    readonly float _v;
#pragma warning restore CS0169
    public static unsafe Vector512<float> Load(F32* p) => Vector512.Load((float*)p);
    public static unsafe void Store(F32* p, Vector512<float> v) => v.Store((float*)p);
    public static unsafe float Get(F32* p) => *(float*)p;
    public static unsafe void Set(F32* p, float v) => *(float*)p = v;
    public static Vector512<float> Round(Vector512<float> v) => v;
    public static float Round(float v) => v;
}

/// <summary>bf16 elements: the top 16 bits of an fp32; stored rounded to nearest even, as libtorch casts (<see cref="VectorMath.Bf16Bits(Vector512{float})"/>).</summary>
internal readonly struct Bf16 : IElement<Bf16>
{
#pragma warning disable CS0169   // never read: it gives the struct its element's size, so Bf16* steps 2 bytes
    readonly ushort _v;
#pragma warning restore CS0169
    public static unsafe Vector512<float> Load(Bf16* p) => VectorMath.WidenBf16((ushort*)p);
    public static unsafe void Store(Bf16* p, Vector512<float> v) => VectorMath.StoreBf16((ushort*)p, v);
    public static unsafe float Get(Bf16* p) => BitConverter.Int32BitsToSingle(*(ushort*)p << 16);
    public static unsafe void Set(Bf16* p, float v) => *(ushort*)p = VectorMath.Bf16Bits(v);
    public static Vector512<float> Round(Vector512<float> v) => (VectorMath.Bf16Bits(v) << 16).AsSingle();
    public static float Round(float v) => BitConverter.UInt32BitsToSingle((uint)VectorMath.Bf16Bits(v) << 16);
}
