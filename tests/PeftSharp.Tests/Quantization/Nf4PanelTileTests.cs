using PeftSharp.Kernels;
using PeftSharp.Quantization;
using PeftSharp.Tests.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// NF4 tiles dequantised straight into MKL's packed layout (<see cref="Nf4PanelTile"/>): the bytes are what MKL's own
/// pack makes of the dequantised tile, and the QLoRA matmul through them gives the plain path's numbers. Serial: it
/// switches the panel path off for its reference, and a <see cref="DequantReuse"/> budget another test sets would route
/// the weights through kept buffers instead of tiles.
/// </summary>
[Collection(SerialCollection.Name)]
public class Nf4PanelTileTests
{
    /// <summary>
    /// Both orientations at a forward tile shape (n = the tile's rows) and a backward one (n = in), including a
    /// 16-wide panel (n = 256 = 5 x 48 + 16 with MKL's AVX-512 kernels, 10 x 24 + 16 with its AVX2 ones) and, for the AVX2 kernels, an 8-wide one (n = 176 = 7 x 24 + 8): the learnt layout written by the dequantiser equals, byte for byte over
    /// the whole buffer (header and padding too), cblas_sgemm_pack of the dense tile into the same buffer.
    /// </summary>
    [Theory]
    [InlineData(true, 256, 1024, true)]
    [InlineData(false, 1024, 256, true)]
    [InlineData(true, 160, 640, true)]
    [InlineData(false, 640, 96, true)]
    [InlineData(true, 256, 1024, false)]
    [InlineData(false, 1024, 256, false)]
    [InlineData(true, 160, 640, false)]
    [InlineData(false, 640, 96, false)]
    [InlineData(true, 176, 640, false)]
    [InlineData(false, 176, 96, false)]
    public void TheDequantisedPanelsAreWhatMklPacksFromTheDenseTile(bool forward, int n, int k, bool wide)
    {
        // wide: the AVX-512 kernels (run where the CPU has AVX-512); else the AVX2 kernels, which an AVX-512 CPU runs too.
        if (!Nf4PanelTile.Supported || wide && !System.Runtime.Intrinsics.X86.Avx512BW.IsSupported) return;   // the plain path runs (the last test covers it)
        bool was = Nf4PanelTile.Wide;
        Nf4PanelTile.Wide = wide;
        try { PanelsEqualMklsPack(forward, n, k); }
        finally { Nf4PanelTile.Wide = was; }
    }

    static unsafe void PanelsEqualMklsPack(bool forward, int n, int k)
    {
        using var scope = NewDisposeScope();
        manual_seed(21);
        // The weight holds three tiles' worth of rows; the tile starts at its second (firstRow), as a middle tile would.
        int tileRows = forward ? n : k, cols = forward ? k : n;
        using var w = Nf4Weight.FromDense(randn(3L * tileRows, cols).Times(0.05));
        using var dense = w.Dequantize(ScalarType.Float32, CPU).narrow(0, tileRows, tileRows).contiguous();
        using var tile = Nf4PanelTile.Learn(forward, 128, n, k);
        Assert.NotNull(tile);
        using (var writer = w.KernelRows()) writer.Write(tileRows, tile);
        var ours = tile.Bytes.ToArray();
        tile.PackDense(dense);
        var mkl = tile.Bytes.ToArray();
        Assert.Equal(mkl.Length, ours.Length);
        int differ = 0;
        for (int i = 0; i < ours.Length; i++) if (ours[i] != mkl[i]) differ++;
        Assert.True(differ == 0, $"{differ} of {ours.Length} bytes differ from MKL's pack of the dense tile");
    }

    /// <summary>
    /// Tiles of two shapes on one slot's shared pages (the path training takes): with the shared pages set to NaN
    /// before the dequantiser writes (the worst another tile could leave there), the products are right and
    /// NaN-free, for products of other row counts than the one the tile was learnt for: the tile rewrites its data
    /// and zeroes its padding, which MKL's kernels do read.
    /// </summary>
    [Fact]
    public unsafe void TilesSharingPagesGiveTheProductWhateverThePagesHeld()
    {
        if (!Nf4PanelTile.Supported) return;
        using var scope = NewDisposeScope();
        manual_seed(23);
        using var pages = Nf4PanelTile.SharedPages.Create();
        Assert.NotNull(pages);
        using var w = Nf4Weight.FromDense(randn(512, 640).Times(0.05));
        var dense = w.Dequantize(ScalarType.Float32, CPU);
        foreach (var (forward, n, k) in new[] { (true, 256, 640), (false, 640, 256), (true, 256, 640) })
        {
            using var tile = Nf4PanelTile.Learn(forward, 40, n, k, pages);
            Assert.NotNull(tile);
            Assert.True(tile.Shared, "the tile's data should lie on the shared pages");
            var bytes = new Span<byte>((void*)((nint)System.Runtime.CompilerServices.Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(tile.Bytes))), tile.Bytes.Length);
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes[(int)tile.SharedBytes.From..(int)tile.SharedBytes.To]).Fill(float.NaN);
            using (var writer = w.KernelRows()) writer.Write(256, tile);   // rows 256-511
            var rows = dense.narrow(0, 256, 256);
            // Learnt for 40 rows, used for others too, as training's batches of other lengths use it.
            foreach (int m in new[] { 40, 16, 200 })
            {
                var a = randn(m, k);
                var c = empty(m, n);
                tile.Multiply((float*)PeftSharp.Kernels.KernelSupport.Address(a), m, k, 0f, (float*)PeftSharp.Kernels.KernelSupport.Address(c), n);
                var expected = forward ? a.matmul(rows.t()) : a.matmul(rows);
                Assert.False(c.isnan().any().item<bool>(), $"{m} rows: MKL read a position the tile neither wrote nor zeroed");
                Assert.True(c.allclose(expected, rtol: 1e-5, atol: 1e-5), $"{m} rows: differs by {(c - expected).abs().max().item<float>()}");
            }
        }
    }

    /// <summary>
    /// Through the path training takes (<see cref="Nf4Weight.Linear"/> forward and backward on a multi-tile weight):
    /// the panel path runs, and y and grad_x agree with the plain tiled path (dequantise into a buffer, sgemm) to
    /// fp32 rounding of the same products.
    /// </summary>
    [Fact]
    public void TheQuantisedLinearThroughPanelsMatchesThePlainTiles()
    {
        using var scope = NewDisposeScope();
        manual_seed(22);
        using var w = Nf4Weight.FromDense(randn(2304, 640).Times(0.05));   // 5.9 MB in fp32: several tiles per thread
        Assert.True(w.Shape[0] * w.Shape[1] * 4 > QuantizedLinearFunction.TileBytes, "the weight must span more than one tile");
        var x0 = randn(2, 40, 640);
        var r = randn(2, 40, 2304);
        (Tensor Y, Tensor Grad) Run()
        {
            var x = x0.clone().requires_grad_(true);
            var y = w.Linear(x, ScalarType.Float32);
            (y * r).sum().backward();
            return (y.detach().clone(), x.grad!.clone());
        }
        long before = Nf4PanelTile.Products;
        var (y1, g1) = Run();
        long used = Nf4PanelTile.Products - before;
        Nf4PanelTile.Enabled = false;
        (Tensor, Tensor) plain;
        try { plain = Run(); }
        finally { Nf4PanelTile.Enabled = true; QuantizedLinearFunction.ReleaseScratch(); }
        if (Nf4PanelTile.Supported) Assert.True(used > 0, "the panel path did not run");
        Assert.True(y1.allclose(plain.Item1, rtol: 1e-5, atol: 1e-5), $"y differs by {(y1 - plain.Item1).abs().max().item<float>()}");
        Assert.True(g1.allclose(plain.Item2, rtol: 1e-5, atol: 1e-5), $"grad_x differs by {(g1 - plain.Item2).abs().max().item<float>()}");
    }
}
