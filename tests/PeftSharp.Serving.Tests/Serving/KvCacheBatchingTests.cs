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
            using var k = ScalarArgs.Arange(rows * 2 * len * 3, ScalarType.Float32, CPU).reshape(rows, 2, len, 3).Plus((double)offset).Plus((double)l);
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
        Assert.Equal(0, b.Length);                                   // b's buffers went into a's, layer by layer
        Assert.Equal(5, a.Capacity(0));                              // no expected slots said: exactly what it holds
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
    public void BuffersGrowByHalfButNeverPastTheExpectedSlots()
    {
        // The server says how many slots its rows can still fill (prompt + max_tokens): a buffer the allocator reuses is
        // resident in full, so slots no token can fill would be memory the plan does not count.
        using var c = new KvCache(1) { ExpectedSlots = 30 };
        using (var k = ones(2, 2, 20, 3)) c.Append(0, k, -k);
        Assert.Equal(30, c.Capacity(0));                          // half again + spare (36) would pass it: capped at 30
        for (int i = 0; i < 10; i++) using (var k = ones(2, 2, 1, 3)) c.Append(0, k, -k);
        Assert.Equal(30, c.Capacity(0));                          // filled without growing again
        using (var k = TestScalars.Full([2, 2, 1, 3], 5f)) c.Append(0, k, -k);   // past what was expected: grows by half, keeps every slot
        Assert.Equal(47, c.Capacity(0));
        using var none = empty(2, 2, 0, 3);
        var (keys, _) = c.Append(0, none, none);
        Assert.Equal(31, keys.shape[2]);
        Assert.Equal(5f, keys[1, 1, 30, 2].item<float>());
        Assert.Equal(30 * 2 * 2 * 3, keys.narrow(2, 0, 30).sum().item<float>());
        // A long horizon (a large max_tokens) is not taken at once: growth by half below it.
        using var far = new KvCache(1) { ExpectedSlots = 1000 };
        using (var k = ones(1, 2, 20, 3)) far.Append(0, k, -k);
        Assert.Equal(36, far.Capacity(0));
        // Without expected slots (generate): half again plus spare, as before.
        using var open = new KvCache(1);
        using (var k = ones(1, 2, 20, 3)) open.Append(0, k, -k);
        Assert.Equal(36, open.Capacity(0));
    }

    [Fact]
    public void AJoinAndRowsLeavingBuildBuffersWithTheExpectedSlotsSoDecodeWritesInPlace()
    {
        // Two caches joined once (left padding: b's 3 slots end at a's 5th) into buffers with room for the slots the rows
        // will fill; a step then writes into those buffers (a view taken before it sees the write after it).
        using var a = Filled(2, 5, 0);
        using var b = Filled(1, 3, 1000);
        using var c = Filled(1, 4, 2000);
        a.ExpectedSlots = 9;
        a.AppendRows(b, c);
        Assert.Equal((5, 9, 9), (a.Length, a.Capacity(0), a.Capacity(1)));
        var (before, _) = a.Append(0, empty(4, 2, 0, 3), empty(4, 2, 0, 3));
        Assert.Equal(2000, before[3, 0, 1, 0].item<float>());                    // c's first key, after one padding slot
        using (var k = TestScalars.Full([4, 2, 1, 3], 7f)) a.Append(0, k, -k);
        before.FillWith(-1L);
        Assert.Equal(-1, a.Append(0, empty(4, 2, 0, 3), empty(4, 2, 0, 3)).K[3, 0, 1, 0].item<float>());
        // Rows 1 and 3 stay, the two slots no kept row needs go, room for two more slots is kept.
        using (var k = TestScalars.Full([4, 2, 1, 3], 8f)) a.Append(1, k, -k);
        a.ExpectedSlots = 6;
        a.SelectRows([3, 1], 2);
        Assert.Equal((4, 6, 6), (a.Length, a.Capacity(0), a.Capacity(1)));
        var (kept, _) = a.Append(1, empty(2, 2, 0, 3), empty(2, 2, 0, 3));
        Assert.Equal(new long[] { 2, 2, 4, 3 }, kept.shape);
        Assert.Equal(8f, kept[0, 1, 3, 2].item<float>());
    }

    [Fact]
    public void TrimLeftRefusesMoreThanItHas()
    {
        using var a = Filled(1, 2, 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => a.TrimLeft(3));
    }
}
