using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using PeftSharp.Tests.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>
/// The rotary tables of a forward without mask or cache (every training step) come from Rope's cache: the same bits as
/// building them from the positions, built once per (length, dtype, device), bounded, freed with the model. Serial: it
/// counts live tensors.
/// </summary>
[Collection(SerialCollection.Name)]
public class RopeTablesCacheTests
{
    /// <summary>Phi-3 longrope (original max 8): lengths 5 and 8 take the short factors, 12 the long ones; partial rotary.</summary>
    [Theory]
    [InlineData(5, ScalarType.Float32)]
    [InlineData(8, ScalarType.Float32)]
    [InlineData(12, ScalarType.Float32)]
    [InlineData(12, ScalarType.BFloat16)]
    public void CachedTablesAreTheBitsBuiltFromThePositions(int t, ScalarType dtype)
    {
        using var model = ModelLoader.Load(RandomModel.Write(RandomModel.Phi3Config(longRope: true)));
        using var scope = NewDisposeScope();
        var (cos, sin) = model.Rope.CosSin(arange(0, t, ScalarType.Int64).unsqueeze(0).expand(3, t), dtype);
        foreach (var _ in new[] { 0, 1 })   // built, then from the cache
        {
            var (cc, cs) = model.Rope.CosSinFromStart(3, t, dtype, CPU);
            Assert.Equal(cos.shape, cc.shape);
            Assert.True(cos.eq(cc).all().item<bool>() && sin.eq(cs).all().item<bool>(), $"T {t}: cached tables differ");
        }
    }

    [Fact]
    public void TablesAreBuiltOncePerLengthKeptBoundedAndFreedWithTheRope()
    {
        var c = new ModelConfig { Shape = new Memory.ModelConfig { ModelType = "llama", HiddenSize = 64, IntermediateSize = 128, NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 2, HeadDim = 32, VocabSize = 32 } };
        long live = Tensor.TotalCount;
        var rope = new Rope(c);
        unsafe nint Table(long t)
        {
            var (cos, sin) = rope.CosSinFromStart(1, t, ScalarType.Float32, CPU);   // batch 1: a contiguous view of the table
            nint p = (nint)KernelSupport.Ptr<float>(cos);
            cos.Dispose(); sin.Dispose();
            return p;
        }
        nint first = Table(16);
        Assert.Equal(first, Table(16));              // the same table, not rebuilt
        foreach (long t in new long[] { 17, 18, 19 }) Table(t);
        Assert.Equal(first, Table(16));              // four lengths fit
        Table(20);                                   // a fifth pushes out the least recently built (16)
        Assert.Equal(live + 2 * 4, Tensor.TotalCount);
        rope.Dispose();
        Assert.Equal(live, Tensor.TotalCount);
    }
}
