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
    [Theory]
    [InlineData(8 * 256, 5)]          // whole blocks only
    [InlineData(7 * 256 + 13, 4)]     // a partial last block with a scalar tail of 5
    [InlineData(3, 2)]                // a single tiny block: the scalar tail alone
    [InlineData(40_000, 3)]           // many blocks over several threads
    public void VectorisedStepEqualsTheScalarKernel(int n, int steps)
    {
        Assert.True(Blockwise8bitAdamVector.IsSupported || !System.Runtime.Intrinsics.X86.Avx2.IsSupported);
        if (!Blockwise8bitAdamVector.IsSupported) return; // Step is the scalar kernel itself on such a CPU.
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
