using static TorchSharp.torch;

namespace PeftSharp.Data;

/// <summary>Where a <see cref="BatchLoader"/> stands: the epoch, the next sequence within that epoch's order, and the shuffle seed.</summary>
internal sealed record DataPosition(int Epoch, int Index, ulong Seed);

/// <summary>
/// Deterministic batches over a fixed list of sequences. Each epoch visits every sequence once in an order that
/// depends only on (seed, epoch), computed with <see cref="SplitMix64"/> + Fisher-Yates (not System.Random, whose algorithm
/// is not a contract), so a saved <see cref="Position"/> resumes exactly. An epoch's last batch may be smaller.
/// </summary>
internal sealed class BatchLoader
{
    readonly IReadOnlyList<TokenSequence> _data;
    int[] _order;
    int _epoch, _index;

    public int BatchSize { get; }
    public bool Shuffle { get; }
    public ulong Seed { get; }
    public int PadId { get; init; }
    public int BatchesPerEpoch => (_data.Count + BatchSize - 1) / BatchSize;

    /// <summary>The most rows one batch holds over <paramref name="rows"/> rows at <paramref name="batchSize"/>: no batch
    /// holds more rows than the data has (the memory plan and the run's description use it; PairLoader batches pairs alike).</summary>
    public static int RowsPerBatch(int batchSize, int rows) => Math.Max(1, Math.Min(batchSize, rows));

    public BatchLoader(IReadOnlyList<TokenSequence> data, int batchSize, ulong seed, bool shuffle = true)
    {
        if (data.Count == 0) throw new ArgumentException("the dataset is empty (no sequences)");
        if (batchSize < 1) throw new ArgumentException($"batch size {batchSize} must be at least 1");
        _data = data; BatchSize = batchSize; Seed = seed; Shuffle = shuffle;
        _order = Order(0);
    }

    public DataPosition Position
    {
        get => new(_epoch, _index, Seed);
        set
        {
            if (value.Seed != Seed) throw new InvalidOperationException($"saved data position uses shuffle seed {value.Seed}, this run uses {Seed}");
            if (value.Epoch < 0 || value.Index < 0 || value.Index > _data.Count)
                throw new InvalidOperationException($"saved data position (epoch {value.Epoch}, index {value.Index}) does not fit a dataset of {_data.Count} sequences");
            _epoch = value.Epoch; _index = value.Index;
            _order = Order(_epoch);
        }
    }

    /// <summary>The sequences of the next batch, advancing the position (wrapping into the next epoch).</summary>
    public IReadOnlyList<TokenSequence> NextRows()
    {
        if (_index >= _data.Count) { _epoch++; _index = 0; _order = Order(_epoch); }
        int n = Math.Min(BatchSize, _data.Count - _index);
        var rows = new TokenSequence[n];
        for (int i = 0; i < n; i++) rows[i] = _data[_order[_index + i]];
        _index += n;
        return rows;
    }

    public Batch Next(Device? device = null) => Batch.From(NextRows(), device, PadId);

    int[] Order(int epoch)
    {
        var order = Enumerable.Range(0, _data.Count).ToArray();
        if (Shuffle) new SplitMix64(Seed ^ (0x9E3779B97F4A7C15UL * (ulong)(epoch + 1))).Shuffle(order);
        return order;
    }
}
