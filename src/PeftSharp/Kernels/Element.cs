namespace PeftSharp.Kernels;

/// <summary>
/// How a kernel (<see cref="RmsNormKernel"/>, <see cref="SwiGluKernel"/>) reads and writes one element type as fp32: a
/// vector of any width L (<see cref="Lanes16"/>, <see cref="Lanes8"/>) or one value.
/// </summary>
internal unsafe interface IElement<T> where T : unmanaged
{
    static abstract V Load<L, V>(T* p) where L : ILanes<V> where V : unmanaged;
    static abstract void Store<L, V>(T* p, V v) where L : ILanes<V> where V : unmanaged;
    static abstract float Get(T* p);
    static abstract void Set(T* p, float v);
    /// <summary>The value the element type would hold (identity for fp32).</summary>
    static abstract V Round<L, V>(V v) where L : ILanes<V> where V : unmanaged;
    static abstract float Round(float v);
}

/// <summary>fp32 elements.</summary>
internal readonly struct F32 : IElement<F32>
{
#pragma warning disable CS0169   // never read: it gives the struct its element's size, so F32* steps 4 bytes
    readonly float _v;
#pragma warning restore CS0169
    public static unsafe V Load<L, V>(F32* p) where L : ILanes<V> where V : unmanaged => L.Load((float*)p);
    public static unsafe void Store<L, V>(F32* p, V v) where L : ILanes<V> where V : unmanaged => L.Store((float*)p, v);
    public static unsafe float Get(F32* p) => *(float*)p;
    public static unsafe void Set(F32* p, float v) => *(float*)p = v;
    public static V Round<L, V>(V v) where L : ILanes<V> where V : unmanaged => v;
    public static float Round(float v) => v;
}

/// <summary>bf16 elements: the top 16 bits of an fp32; stored rounded to nearest even, as libtorch casts (<see cref="VectorMath.Bf16Bits(float)"/>).</summary>
internal readonly struct Bf16 : IElement<Bf16>
{
#pragma warning disable CS0169   // never read: it gives the struct its element's size, so Bf16* steps 2 bytes
    readonly ushort _v;
#pragma warning restore CS0169
    public static unsafe V Load<L, V>(Bf16* p) where L : ILanes<V> where V : unmanaged => L.WidenBf16((ushort*)p);
    public static unsafe void Store<L, V>(Bf16* p, V v) where L : ILanes<V> where V : unmanaged => L.StoreBf16((ushort*)p, v);
    public static unsafe float Get(Bf16* p) => BitConverter.Int32BitsToSingle(*(ushort*)p << 16);
    public static unsafe void Set(Bf16* p, float v) => *(ushort*)p = VectorMath.Bf16Bits(v);
    public static V Round<L, V>(V v) where L : ILanes<V> where V : unmanaged => L.RoundBf16(v);
    public static float Round(float v) => BitConverter.UInt32BitsToSingle((uint)VectorMath.Bf16Bits(v) << 16);
}
