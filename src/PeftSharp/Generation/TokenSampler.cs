using static TorchSharp.torch;

namespace PeftSharp.Generation;

/// <summary>
/// Greedy or temperature + top-k + top-p (nucleus) sampling over one row of logits, after HF's repetition penalty.
/// Sampling runs in C# on a seeded <see cref="Random"/>, so a seed gives the same tokens on any device. Nothing sorts
/// the vocabulary: with no filter the draw walks the probabilities in id order, top-k keeps a heap of k, and top-p
/// pops the most likely tokens from a heap built in linear time until their mass reaches top_p.
/// </summary>
internal sealed class TokenSampler
{
    readonly SamplingOptions _o;
    readonly Random _rng;
    readonly HashSet<int> _seen;   // prompt and generated ids, for the repetition penalty

    public TokenSampler(SamplingOptions options, IEnumerable<int>? prompt = null)
    {
        options.Validate();
        _o = options;
        _rng = options.Seed is int s ? new Random(s) : new Random();
        _seen = options.RepetitionPenalty == 1.0 ? [] : [.. prompt ?? []];
    }

    /// <summary>Picks the next token from logits of shape [V] (any float dtype, any device) and records it as seen.</summary>
    public int Next(Tensor logits)
    {
        if (_o.IsPlainGreedy) return Seen((int)logits.argmax().item<long>());
        using var f = logits.to_type(ScalarType.Float32).cpu();
        return Pick(f.data<float>().ToArray());
    }

    /// <summary>The same for fp32 logits in memory (the C# decode's); greedy is the first maximum, as torch's argmax.</summary>
    public int Next(ReadOnlySpan<float> logits) => _o.IsPlainGreedy ? Seen(ArgMax(logits)) : Pick(logits.ToArray());

    int Pick(float[] row)
    {
        Penalise(row);
        return Seen(_o.Temperature == 0 ? ArgMax(row) : Sample(row));
    }

    int Seen(int next)
    {
        if (_o.RepetitionPenalty != 1.0) _seen.Add(next);
        return next;
    }

    /// <summary>HF's RepetitionPenaltyLogitsProcessor: each seen id's logit is divided by the penalty if positive, multiplied if negative.</summary>
    void Penalise(float[] logits)
    {
        if (_o.RepetitionPenalty == 1.0) return;
        float p = (float)_o.RepetitionPenalty;
        foreach (int id in _seen)
            if ((uint)id < (uint)logits.Length) logits[id] = logits[id] < 0 ? logits[id] * p : logits[id] / p;
    }

    static int ArgMax(ReadOnlySpan<float> xs)
    {
        int best = 0;
        for (int i = 1; i < xs.Length; i++) if (xs[i] > xs[best]) best = i;
        return best;
    }

    /// <summary>Draws from softmax(logits / temperature) restricted by top-k and top-p.</summary>
    public int Sample(float[] logits)
    {
        int v = logits.Length;
        float max = float.NegativeInfinity;
        foreach (var l in logits) max = Math.Max(max, l);
        var p = new double[v];
        for (int i = 0; i < v; i++) p[i] = Math.Exp((logits[i] - max) / _o.Temperature);

        bool topK = _o.TopK > 0 && _o.TopK < v;
        if (!topK && _o.TopP >= 1) return Draw(p, null, v);
        int[] kept = topK ? LargestDescending(p, _o.TopK) : [];
        if (_o.TopP >= 1) return Draw(p, kept, kept.Length);
        return topK ? Draw(p, kept, NucleusSize(p, kept, kept.Sum(i => p[i]))) : NucleusByHeap(p);
    }

    /// <summary>The k most likely ids, most likely first: a min-heap of size k over the vocabulary, O(V log k).</summary>
    static int[] LargestDescending(double[] p, int k)
    {
        var heap = new PriorityQueue<int, double>(k);
        for (int i = 0; i < p.Length; i++)
        {
            if (heap.Count < k) heap.Enqueue(i, p[i]);
            else if (heap.TryPeek(out _, out double least) && p[i] > least) heap.DequeueEnqueue(i, p[i]);
        }
        var ids = new int[heap.Count];
        for (int j = ids.Length - 1; j >= 0; j--) ids[j] = heap.Dequeue();
        return ids;
    }

    /// <summary>Nucleus: how many of <paramref name="sorted"/> (most likely first) it takes for their mass to reach top_p.</summary>
    int NucleusSize(double[] p, int[] sorted, double total)
    {
        double mass = 0;
        for (int n = 0; n < sorted.Length; n++)
        {
            mass += p[sorted[n]];
            if (mass / total >= _o.TopP) return n + 1;
        }
        return sorted.Length;
    }

    /// <summary>Nucleus over the whole vocabulary: heapify (linear) and pop the most likely until the mass reaches top_p.</summary>
    int NucleusByHeap(double[] p)
    {
        double total = 0;
        foreach (var x in p) total += x;
        var heap = new PriorityQueue<int, double>(Enumerable.Range(0, p.Length).Select(i => (i, -p[i])));
        var kept = new List<int>();
        double mass = 0;
        while (heap.Count > 0)
        {
            int id = heap.Dequeue();
            kept.Add(id);
            mass += p[id];
            if (mass / total >= _o.TopP) break;
        }
        return Draw(p, kept.ToArray(), kept.Count);
    }

    /// <summary>One draw proportional to p over the first <paramref name="count"/> of <paramref name="ids"/> (null: all ids in order).</summary>
    int Draw(double[] p, int[]? ids, int count)
    {
        double sum = 0;
        for (int j = 0; j < count; j++) sum += p[ids?[j] ?? j];
        double u = _rng.NextDouble() * sum;
        for (int j = 0; j < count; j++)
        {
            int id = ids?[j] ?? j;
            u -= p[id];
            if (u <= 0) return id;
        }
        return ids?[count - 1] ?? count - 1;
    }
}
