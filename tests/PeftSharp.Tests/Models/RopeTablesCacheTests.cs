using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using PeftSharp.Tests.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>
/// The rotary tables of a forward without mask or cache (every unpadded training step) come from Rope's kept tables:
/// the same bits as building them from the positions, one pair of tables for the longest length asked (shorter ones
/// are views of it), freed with the Rope. Serial: it counts live tensors.
/// </summary>
[Collection(SerialCollection.Name)]
public class RopeTablesCacheTests
{
    static ModelConfig Llama3Scaled() => new()
    {
        Shape = new Memory.ModelConfig { ModelType = "llama", HiddenSize = 64, IntermediateSize = 128, NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 2, HeadDim = 32, VocabSize = 32 },
        RopeTheta = 500000,
        RopeScaling = new RopeScaling("llama3", 8, 1, 4, 64),
    };

    /// <summary>Llama 3.1 scaling, fp32 and bf16: lengths asked longest first (later ones are views of the first
    /// table), then longer (rebuilt); Phi-3 longrope (original max 8) builds them each time, short and long factors.</summary>
    [Theory]
    [InlineData(false, ScalarType.Float32)]
    [InlineData(false, ScalarType.BFloat16)]
    [InlineData(true, ScalarType.Float32)]
    public void TablesAreTheBitsBuiltFromThePositions(bool longRope, ScalarType dtype)
    {
        using var model = longRope ? ModelLoader.Load(RandomModel.Write(RandomModel.Phi3Config(longRope: true))) : null;
        using var rope = longRope ? null : new Rope(Llama3Scaled());
        var r = model?.Rope ?? rope!;
        foreach (long t in new long[] { 40, 12, 5, 40, 77 })
        {
            using var scope = NewDisposeScope();
            var (cos, sin) = r.CosSin(ScalarArgs.Arange(t, ScalarType.Int64, CPU).unsqueeze(0).expand(3, t), dtype);
            var (cc, cs) = r.CosSinFromStart(3, t, dtype, CPU);
            Assert.Equal(cos.shape, cc.shape);
            Assert.True(cos.eq(cc).all().item<bool>() && sin.eq(cs).all().item<bool>(), $"T {t}: kept tables differ");
        }
    }

    [Fact]
    public void OnePairOfTablesForTheLongestLengthFreedWithTheRope()
    {
        // Finalise garbage left by earlier tests first: its release would otherwise lower the count mid-test.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        long live = Tensor.TotalCount;
        var rope = new Rope(Llama3Scaled());
        unsafe nint Table(long t)
        {
            var (cos, sin) = rope.CosSinFromStart(1, t, ScalarType.Float32, CPU);   // batch 1: a contiguous view of the table
            nint p = (nint)KernelSupport.Ptr<float>(cos);
            cos.Dispose(); sin.Dispose();
            return p;
        }
        nint first = Table(16);
        Assert.Equal(first, Table(16));              // kept, not rebuilt
        Assert.Equal(first, Table(9));               // a shorter length: a view of the same table
        Table(30);                                   // a longer one replaces it
        Assert.Equal(live + 2, Tensor.TotalCount);   // one cos and one sin however the lengths vary
        rope.Dispose();
        Assert.Equal(live, Tensor.TotalCount);
    }
}
