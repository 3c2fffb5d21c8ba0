using PeftSharp.IO;
using PeftSharp.Quantization;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

public class DoubleQuantTests
{
    [Fact]
    public void SignedDynamicMapHas256SortedDistinctValuesFromMinusOneToOne()
    {
        var m = DoubleQuant.SignedDynamicMap;
        Assert.Equal(256, m.Length);
        for (int i = 1; i < m.Length; i++) Assert.True(m[i] > m[i - 1], $"map not strictly increasing at {i}");
        Assert.Equal(1f, m[^1]);
        Assert.Contains(0f, m);
        Assert.True(m[0] > -1f && m[0] < -0.99f);
        Assert.Equal(1e-6f * 0.55f, m.Where(v => v > 0).Min(), 1e-12f);
    }

    [Fact]
    public void DoubleQuantisedAbsmaxIsCloseToTheOriginal()
    {
        var rng = new Random(7);
        var absmax = Enumerable.Range(0, 1000).Select(_ => (float)(0.05 + rng.NextDouble() * 0.02)).ToArray();
        var dq = DoubleQuant.Quantize(absmax);
        Assert.Equal(4, dq.NestedAbsmax.Length);
        var back = DoubleQuant.Dequantize(dq.Codes, dq.NestedAbsmax, DoubleQuant.SignedDynamicMap, dq.Offset, 256);
        for (int i = 0; i < absmax.Length; i++)
            Assert.True(Math.Abs(back[i] - absmax[i]) <= 0.01 * absmax[i], $"absmax {i}: {back[i]} vs {absmax[i]}");
    }

    [Fact]
    public void StorageIsAtMost413BitsPerWeightMeasuredFromTheWrittenBytes_AndGaussianErrorIsAboutPointOne()
    {
        string dir = TestPaths.TempDir();
        manual_seed(11);
        using var dense = randn(1024, 1024).Times(0.02);
        using var w = Nf4Weight.FromDense(dense);
        string path = Path.Combine(dir, "model.safetensors");
        SafeTensorsWriter.Write(path, BnbCheckpoint.Entries("model.layers.0.mlp.up_proj.weight", w));
        using var f = new SafeTensorsFile(path);
        long bytes = f.Info("model.layers.0.mlp.up_proj.weight").ByteLength + f.Info("model.layers.0.mlp.up_proj.weight.absmax").ByteLength
            + f.Info("model.layers.0.mlp.up_proj.weight.nested_absmax").ByteLength + 4; // + the float32 offset in the JSON
        double bits = bytes * 8.0 / dense.numel();
        Assert.True(bits <= 4.13, $"{bits} bits per weight");
        Assert.Equal(w.BitsPerWeight, bits, 9);
        double err = w.RelativeError(dense);
        Assert.InRange(err, 0.07, 0.12);
        var (e, n) = w.ErrorSums(dense);
        Assert.Equal(err, Math.Sqrt(e / n), 6);
        var (again, reErr) = Nf4Weight.Requantize(dense, new Nf4Options());
        using (again) Assert.Equal(err, reErr, 6);
    }
}
