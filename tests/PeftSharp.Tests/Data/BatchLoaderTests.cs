using PeftSharp.Data;

namespace PeftSharp.Tests.Data;

public class BatchLoaderTests
{
    static List<TokenSequence> Seqs(int n) => Enumerable.Range(0, n).Select(i => new TokenSequence([i, i + 1, i + 2], [TokenSequence.Ignore, i + 1, i + 2])).ToList();

    static List<int> FirstIds(BatchLoader l, int batches) => Enumerable.Range(0, batches).SelectMany(_ => l.NextRows().Select(r => r.Ids[0])).ToList();

    [Fact]
    public void EachEpochIsAPermutationFixedBySeedAndEpoch()
    {
        var data = Seqs(10);
        var a = FirstIds(new BatchLoader(data, 3, seed: 5), 8); // 4 batches per epoch (3+3+3+1): two epochs
        Assert.Equal(Enumerable.Range(0, 10), a.Take(10).Order());
        Assert.Equal(Enumerable.Range(0, 10), a.Skip(10).Order());
        Assert.NotEqual(a.Take(10), a.Skip(10)); // reshuffled per epoch
        Assert.Equal(a, FirstIds(new BatchLoader(data, 3, seed: 5), 8));
        Assert.NotEqual(a, FirstIds(new BatchLoader(data, 3, seed: 6), 8));
        Assert.Equal(Enumerable.Range(0, 10), FirstIds(new BatchLoader(data, 5, seed: 5, shuffle: false), 2));
    }

    [Fact]
    public void EpochOrdersAreFixedForever()
    {
        // Checkpoints store (seed, epoch, index): these orders must never change, or resumed runs would see other data.
        var l = new BatchLoader(Seqs(10), 10, seed: 5);
        Assert.Equal("2 1 5 9 0 8 7 3 6 4", string.Join(" ", l.NextRows().Select(r => r.Ids[0])));
        Assert.Equal("7 1 8 4 6 9 0 5 2 3", string.Join(" ", l.NextRows().Select(r => r.Ids[0])));
    }

    [Fact]
    public void RestoredPositionContinuesExactly()
    {
        var data = Seqs(7);
        var full = new BatchLoader(data, 2, seed: 9);
        FirstIds(full, 5);
        var pos = full.Position;
        var rest = FirstIds(full, 6);

        var resumed = new BatchLoader(data, 2, seed: 9) { Position = pos };
        Assert.Equal(rest, FirstIds(resumed, 6));
        Assert.Equal(pos with { }, new BatchLoader(data, 2, 9) { Position = pos }.Position);
        Assert.Throws<InvalidOperationException>(() => new BatchLoader(data, 2, seed: 10) { Position = pos });
    }

    [Fact]
    public void BatchesPadRightWithIgnoredLabelsAndMask()
    {
        var rows = new List<TokenSequence> { new([5, 6, 7], [TokenSequence.Ignore, 6, 7]), new([8], [8]) };
        using var b = Batch.From(rows, padId: 0);
        Assert.Equal(new long[] { 5, 6, 7, 8, 0, 0 }, b.InputIds.data<long>().ToArray());
        Assert.Equal(new long[] { -100, 6, 7, 8, -100, -100 }, b.Labels.data<long>().ToArray());
        Assert.Equal(new long[] { 1, 1, 1, 1, 0, 0 }, b.AttentionMask!.data<long>().ToArray());
        Assert.Equal(4, b.Tokens);
        Assert.Equal(2, b.LossTokens); // 6 and 7; row 2's only label is at position 0 and has no context
        using var full = Batch.From([rows[0]]);
        Assert.Null(full.AttentionMask);
    }

    [Fact]
    public void EmptyDataIsRejected() =>
        Assert.Throws<ArgumentException>(() => new BatchLoader([], 2, 1));
}
