using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PeftSharp.Kernels;

namespace PeftSharp.Tests.Kernels;

/// <summary>The 8-lane (AVX2 + FMA) functions of <see cref="VectorMath"/> against float64 and the scalar bf16 rounding.</summary>
public unsafe class VectorMath8Tests
{
    static bool Runs => Avx2.IsSupported && Fma.IsSupported;

    static float[] Samples()
    {
        var rng = new Random(5);
        var xs = new List<float> { 0f, -0f, 1f, -1f, 88f, -87f, 100f, -100f, 0.5f, 1e-30f, float.Epsilon };
        for (int i = 0; i < 4000; i++) xs.Add((float)(rng.NextDouble() * 180 - 90));
        while (xs.Count % 8 != 0) xs.Add(2f);
        return xs.ToArray();
    }

    [Fact]
    public void ExpIsWithinTwoUlpOfFloat64OverTheClampedRange()
    {
        if (!Runs) return;
        var xs = Samples();
        fixed (float* p = xs)
            for (int i = 0; i < xs.Length; i += 8)
            {
                var e = VectorMath.Exp(Vector256.Load(p + i));
                for (int l = 0; l < 8; l++)
                {
                    double want = Math.Exp(Math.Clamp(xs[i + l], -87.0, 88.0));
                    Assert.True(Math.Abs(e[l] - want) <= 2.5e-7 * want, $"exp({xs[i + l]}) = {e[l]}, float64 {want}");
                }
            }
    }

    [Fact]
    public void SigmoidAndReciprocalMatchFloat64()
    {
        if (!Runs) return;
        var xs = Samples();
        fixed (float* p = xs)
            for (int i = 0; i < xs.Length; i += 8)
            {
                var x = Vector256.Load(p + i);
                var s = VectorMath.Sigmoid(x);
                var d = Vector256.Abs(x) + Vector256<float>.One;
                var r = VectorMath.Reciprocal(d);
                for (int l = 0; l < 8; l++)
                {
                    double want = 1 / (1 + Math.Exp(-Math.Clamp(xs[i + l], -88.0, 87.0)));
                    // Below ~1.2e-38 the estimate flushes to zero (a denormal result), as the 16-lane one.
                    Assert.True(Math.Abs(s[l] - want) <= 4e-7 * want + 1.2e-38, $"sigmoid({xs[i + l]}) = {s[l]}, float64 {want}");
                    double inv = 1.0 / d[l];
                    Assert.True(Math.Abs(r[l] - inv) <= 1.5e-7 * inv, $"1/{d[l]} = {r[l]}, float64 {inv}");
                }
            }
    }

    [Fact]
    public void Bf16RoundTripsAsTheScalarRounding()
    {
        if (!Runs) return;
        var xs = Samples().Concat([float.NaN, float.PositiveInfinity, float.NegativeInfinity, 3.3895314e38f, 1.0039062f, 1.0117188f, -1.0039062f, 1f]).ToArray();
        while (xs.Length % 8 != 0) xs = [.. xs, 0.1f];
        var bits = new ushort[xs.Length];
        var back = new float[xs.Length];
        fixed (float* p = xs) fixed (ushort* b = bits) fixed (float* q = back)
            for (int i = 0; i < xs.Length; i += 8)
            {
                VectorMath.StoreBf16(b + i, Vector256.Load(p + i));
                VectorMath.WidenBf16x8(b + i).Store(q + i);
            }
        for (int i = 0; i < xs.Length; i++)
        {
            Assert.Equal(VectorMath.Bf16Bits(xs[i]), bits[i]);
            Assert.Equal(BitConverter.Int32BitsToSingle(bits[i] << 16), back[i]);
        }
    }
}
