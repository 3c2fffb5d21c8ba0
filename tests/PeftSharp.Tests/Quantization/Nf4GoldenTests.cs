using System.Runtime.InteropServices;
using PeftSharp.IO;
using PeftSharp.Quantization;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

public class Nf4GoldenTests
{
    static SafeTensorsFile Golden() => new(Path.Combine(TestPaths.TinyLlama, "nf4_golden.safetensors"));

    [Theory]
    [InlineData("heavy")]
    [InlineData("q_proj")]
    public void PackedBytesAndAbsmaxMatchBitsandbytes(string name)
    {
        using var g = Golden();
        using var input = g.Load($"{name}.input");
        using var w = Nf4Weight.FromDense(input, new Nf4Options(64, DoubleQuant: false));
        Assert.Equal(g.RawBytes($"{name}.packed").ToArray(), w.Packed.bytes.ToArray());
        Assert.Equal(MemoryMarshal.Cast<byte, float>(g.RawBytes($"{name}.absmax")).ToArray(), w.AbsmaxFloats());
        using var expected = g.Load($"{name}.dequantized");
        using var dq = w.Dequantize(ScalarType.Float32, CPU);
        Assert.True(TestPaths.RelativeError(dq, expected) <= 1e-6);
    }

    [Theory]
    [InlineData("heavy")]
    [InlineData("q_proj")]
    public void ReferenceDequantisationOfGoldenCodesMatchesGolden(string name)
    {
        using var g = Golden();
        var deq = Nf4Quantizer.DequantizeReference(g.RawBytes($"{name}.packed"), MemoryMarshal.Cast<byte, float>(g.RawBytes($"{name}.absmax")), 64, FourBitType.Nf4);
        var expected = MemoryMarshal.Cast<byte, float>(g.RawBytes($"{name}.dequantized"));
        for (int i = 0; i < deq.Length; i++) Assert.True(Math.Abs(deq[i] - expected[i]) <= 1e-6 * Math.Max(1, Math.Abs(expected[i])), $"element {i}");
    }

    [Fact]
    public void DecisionTreePicksTheNearestCode()
    {
        var rng = new Random(1);
        for (int k = 0; k < 100_000; k++)
        {
            float x = (float)(rng.NextDouble() * 2 - 1);
            double best = double.MaxValue; int arg = -1;
            for (int i = 0; i < 16; i++) { double d = Math.Abs(x - (double)Nf4Codes.Nf4[i]); if (d < best) { best = d; arg = i; } }
            Assert.Equal(arg, Nf4Codes.QuantizeNf4(x));
        }
    }

    [Theory]
    [InlineData(ScalarType.Float32, true, 64, FourBitType.Nf4)]
    [InlineData(ScalarType.BFloat16, true, 64, FourBitType.Nf4)]
    [InlineData(ScalarType.Float16, false, 128, FourBitType.Nf4)]
    [InlineData(ScalarType.Float32, true, 32, FourBitType.Fp4)]
    public void KernelAndTorchOpsPathsAreBitwiseEqual(ScalarType dtype, bool dq, int block, FourBitType type)
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var dense = randn(96, 512).Times(0.02);
        using var w = Nf4Weight.FromDense(dense, new Nf4Options(block, dq, type));
        var a = w.DequantizeKernel(dtype);
        var b = w.DequantizeOps(dtype);
        Assert.Equal(dtype, a.dtype);
        Assert.Equal(b.bytes.ToArray(), a.bytes.ToArray());
        // ... and both equal the scalar reference (float32 path).
        var reference = Nf4Quantizer.DequantizeReference(w.Packed.bytes, w.AbsmaxFloats(), block, type);
        var f32 = w.DequantizeKernel(ScalarType.Float32);
        Assert.Equal(reference, MemoryMarshal.Cast<byte, float>(f32.bytes).ToArray());
    }

    [Theory]
    [InlineData(ScalarType.Float32, 64)]
    [InlineData(ScalarType.BFloat16, 128)]
    public void KernelSplitOverTorchThreadsIsBitwiseEqualToTheOpsPath(ScalarType dtype, int block)
    {
        // Over 2^18 weights the kernel splits the blocks over torch's threads (2 on the 2-core box); into a
        // caller's buffer (QLoRA's scratch) it writes the same bytes as into a fresh tensor.
        using var scope = NewDisposeScope();
        manual_seed(4);
        using var w = Nf4Weight.FromDense(randn(600, 544).Times(0.02), new Nf4Options(block, true, FourBitType.Nf4));
        var fresh = w.DequantizeKernel(dtype);
        Assert.Equal(w.DequantizeOps(dtype).bytes.ToArray(), fresh.bytes.ToArray());
        var into = TestScalars.Full([600, 544], double.NaN, dtype);
        Assert.True(w.DequantizeInto(into));
        Assert.Equal(fresh.bytes.ToArray(), into.bytes.ToArray());
        Assert.Throws<ArgumentException>(() => w.DequantizeInto(empty(544, 600, dtype)));
    }

    [Fact]
    public void BlockSizeNotDividingTheTensorIsAClearError()
    {
        using var t = randn(3, 50);
        var e = Assert.Throws<ArgumentException>(() => Nf4Weight.FromDense(t, new Nf4Options(64), name: "layers.0.q_proj.weight"));
        Assert.Contains("layers.0.q_proj.weight", e.Message);
        Assert.Contains("block size 64", e.Message);
        Assert.Throws<ArgumentException>(() => new Nf4Options(48).Validate());
        Assert.Throws<ArgumentException>(() => new Nf4Options(8192).Validate());
    }
}
