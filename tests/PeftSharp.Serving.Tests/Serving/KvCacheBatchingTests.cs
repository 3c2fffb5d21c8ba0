using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Serving;

public class KvCacheBatchingTests
{
    static KvCache Filled(long rows, long len, float offset)
    {
        var c = new KvCache(2);
        for (int l = 0; l < 2; l++)
        {
            using var k = arange(rows * 2 * len * 3, ScalarType.Float32).reshape(rows, 2, len, 3) + offset + l;
            using var v = -k;
            c.Append(l, k, v);
        }
        return c;
    }

    [Fact]
    public void AppendRowsLeftPadsTheShorterSideAndKeepsValues()
    {
        using var a = Filled(2, 5, 0);
        using var b = Filled(1, 3, 1000);
        using var bK = b.Append(0, empty(1, 2, 0, 3), empty(1, 2, 0, 3)).K.clone();   // b's layer-0 keys, unchanged
        a.AppendRows(b);
        Assert.Equal(5, a.Length);
        var (k, v) = a.Append(0, empty(3, 2, 0, 3), empty(3, 2, 0, 3));
        Assert.Equal(new long[] { 3, 2, 5, 3 }, k.shape);
        Assert.Equal(0, k[2, .., ..2].abs().sum().item<float>());                    // two zero slots on the left
        Assert.True(k[2, .., 2..].allclose(bK[0], 0, 0));                                      // then b's row as it was
        Assert.Equal(0, v[2, .., ..2].abs().sum().item<float>());

        a.SelectRows([2]);
        a.TrimLeft(2);
        Assert.Equal(3, a.Length);
        Assert.True(a.Append(0, empty(1, 2, 0, 3), empty(1, 2, 0, 3)).K.allclose(bK, 0, 0));
    }

    [Fact]
    public void TrimLeftRefusesMoreThanItHas()
    {
        using var a = Filled(1, 2, 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => a.TrimLeft(3));
    }
}
