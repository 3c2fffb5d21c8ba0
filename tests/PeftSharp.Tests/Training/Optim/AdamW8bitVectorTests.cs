using PeftSharp.Training.Optim;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training.Optim;

/// <summary>
/// The vectorised 8-bit AdamW step (what AdamW8bit runs on an AVX2 CPU) equals the scalar kernel bit for bit: the
/// parameters, both moments' codes and both block scales, over several steps, with partial blocks, a tail that is
/// not a multiple of eight, an all-zero block, tiny and large gradients, and a non-finite gradient.
/// </summary>
public class AdamW8bitVectorTests
{
    /// <summary>
    /// <paramref name="wide"/>: the AVX-512 blocks where the CPU has them (else, and with false, the AVX2 blocks). Both are
    /// bit-identical to the scalar kernel, so flipping the switch cannot disturb a test running the kernel beside this one.
    /// </summary>
    [Theory]
    [InlineData(8 * 256, 5, true)]          // whole blocks only
    [InlineData(8 * 256, 5, false)]
    [InlineData(7 * 256 + 13, 4, true)]     // a partial last block with a scalar tail of 5
    [InlineData(7 * 256 + 13, 4, false)]
    [InlineData(3, 2, true)]                // a single tiny block: the scalar tail alone
    [InlineData(40_000, 3, true)]           // many blocks over several threads
    [InlineData(40_000, 3, false)]
    public void VectorisedStepEqualsTheScalarKernel(int n, int steps, bool wide)
    {
        Assert.True(Blockwise8bitAdamVector.IsSupported || !System.Runtime.Intrinsics.X86.Avx2.IsSupported);
        if (!Blockwise8bitAdamVector.IsSupported) return; // Step is the scalar kernel itself on such a CPU.
        Blockwise8bitAdamVector.UseWide = wide;
        // The AVX-512 blocks run wherever the CPU has AVX-512 with VBMI (both maps have their decade lines).
        Assert.Equal(wide && CodeTableLookup.IsSupported && DecadeQuantizer.IsSupported, Blockwise8bitAdamVector.RunsWide);
        try { StepBoth(n, steps); }
        finally { Blockwise8bitAdamVector.UseWide = true; }
    }

    static void StepBoth(int n, int steps)
    {
        var o = new AdamWOptions(3e-3, 0.9, 0.995, 1e-8, 0.02);
        long blocks = (n + 255) / 256;
        var gen = new Generator(5);
        using var p0 = randn(n, generator: gen);
        using var pv = p0.clone();
        using var ps = p0.clone();
        var sv = new[] { zeros(n, ScalarType.Byte), zeros(blocks), zeros(n, ScalarType.Byte), zeros(blocks) };
        var ss = sv.Select(t => t.clone()).ToArray();
        for (long step = 1; step <= steps; step++)
        {
            using var g = randn(n, generator: gen).Times(step % 2 == 0 ? 1e-4 : 3.0);
            if (step == 1 && n > 512) g.narrow(0, 256, 256).zero_(); // an all-zero block
            Blockwise8bitAdamKernel.Step(pv, g, sv[0], sv[1], sv[2], sv[3], step, o.LearningRate, o);
            Blockwise8bitAdamKernel.StepScalar(ps, g, ss[0], ss[1], ss[2], ss[3], step, o.LearningRate, o);
        }
        Assert.Equal(ps.bytes.ToArray(), pv.bytes.ToArray()); // bit for bit
        for (int k = 0; k < 4; k++) Assert.Equal(ss[k].bytes.ToArray(), sv[k].bytes.ToArray());
        Assert.NotEqual(p0.bytes.ToArray(), pv.bytes.ToArray()); // it moved
        foreach (var t in sv.Concat(ss)) t.Dispose();
    }

    [Fact]
    public void NonFiniteGradientGivesTheSameStateAsTheScalarKernel()
    {
        if (!Blockwise8bitAdamVector.IsSupported) return;
        const int n = 600;
        var o = new AdamWOptions(1e-3, 0.9, 0.999, 1e-8, 0.0);
        using var g = randn(n, generator: new Generator(3));
        g[17] = float.NaN;
        g[300] = float.PositiveInfinity;
        using var pv = ones(n);
        using var ps = ones(n);
        var sv = new[] { zeros(n, ScalarType.Byte), zeros(3), zeros(n, ScalarType.Byte), zeros(3) };
        var ss = sv.Select(t => t.clone()).ToArray();
        Blockwise8bitAdamKernel.Step(pv, g, sv[0], sv[1], sv[2], sv[3], 1, o.LearningRate, o);
        Blockwise8bitAdamKernel.StepScalar(ps, g, ss[0], ss[1], ss[2], ss[3], 1, o.LearningRate, o);
        // NaN != NaN elementwise, so compare the bytes.
        Assert.Equal(ps.bytes.ToArray(), pv.bytes.ToArray());
        for (int k = 0; k < 4; k++) Assert.Equal(ss[k].bytes.ToArray(), sv[k].bytes.ToArray());
        foreach (var t in sv.Concat(ss)) t.Dispose();
    }

    /// <summary>
    /// The AVX-512 requantisation by decade lines gives the map's own search result for: every midpoint and the 64 floats
    /// either side of it, the decade boundaries exactly, floats spread over every exponent with both signs, zero and
    /// negative zero, subnormals, infinities and NaN. (`PeftSharp.Bench dynamic-map-check` runs every float in [-2, 2].)
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public unsafe void DecadeQuantizerEqualsTheSearch(bool signed)
    {
        if (!DecadeQuantizer.IsSupported) return; // the kernel gathers rules on such a CPU
        var map = signed ? DynamicMap.Signed : DynamicMap.Unsigned;
        var q = DecadeQuantizer.For(map, signed);
        Assert.NotNull(q); // bitsandbytes' maps have the decade structure
        var bits = new List<uint> { 0, 0x80000000, 1, 0x80000001, 0x007FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x3F800000, 0xBF800000 };
        foreach (float mid in map.Midpoints)
        {
            uint b = BitConverter.SingleToUInt32Bits(mid);
            for (uint d = 0; d <= 64; d++) { bits.Add(b + d); bits.Add(b - d); bits.Add((b + d) ^ 0x80000000); bits.Add((b - d) ^ 0x80000000); }
        }
        var rng = new Random(7);
        for (uint e = 0; e < 256; e++)
            for (int r = 0; r < 64; r++) bits.Add(e << 23 | (uint)rng.Next(1 << 23) | (r % 2 == 0 ? 0 : 0x80000000));
        for (uint b = 0; b < 0x40000000; b += 4093) bits.Add(b);
        while (bits.Count % 16 != 0) bits.Add(0);
        var xs = bits.Select(BitConverter.UInt32BitsToSingle).ToArray();
        var codes = new byte[xs.Length];
        fixed (float* x = xs)
        fixed (byte* c = codes)
            q!.Quantize(x, 1f, c, xs.Length);
        for (int i = 0; i < xs.Length; i++)
            if (codes[i] != map.Quantize(xs[i])) Assert.Fail($"bits {bits[i]:X8} ({xs[i]:G9}): decades give {codes[i]}, search {map.Quantize(xs[i])}");
        // The scale the kernel applies first (x * inv) goes through the same path.
        fixed (float* x = xs)
        fixed (byte* c = codes)
            q!.Quantize(x, 0.37f, c, xs.Length);
        for (int i = 0; i < xs.Length; i++)
            Assert.Equal(map.Quantize(xs[i] * 0.37f), codes[i]);
    }

    /// <summary>The gather-free lookup (AVX-512 VBMI) returns each code's table value bit for bit, in element order.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public unsafe void CodeTableLookupGivesEachCodesValue(bool signed)
    {
        if (!CodeTableLookup.IsSupported) return; // the kernel gathers on such a CPU
        var map = signed ? DynamicMap.Signed : DynamicMap.Unsigned;
        var rng = new Random(2);
        var codes = new byte[4 * 256];
        for (int i = 0; i < codes.Length; i++) codes[i] = i < 256 ? (byte)i : (byte)rng.Next(256);
        var got = new float[codes.Length];
        fixed (byte* planes = map.ValuePlanes, c = codes)
        fixed (float* d = got)
            CodeTableLookup.Lookup(planes, c, d, codes.Length);
        for (int i = 0; i < codes.Length; i++)
            Assert.Equal(BitConverter.SingleToUInt32Bits(map.Values[codes[i]]), BitConverter.SingleToUInt32Bits(got[i]));
    }
}
