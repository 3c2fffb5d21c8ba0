using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Serving.Scheduling;

/// <summary>
/// The rows being decoded together: one shared KV cache, left-padded so every row ends at its newest token, and
/// each row's count of real slots (the attention mask is rebuilt from these counts every step). Rows join after a
/// prefill of their own and leave through <see cref="KvCache.SelectRows"/>; slots no row needs are trimmed.
/// Invariant: a row never outgrows the model's context. A prompt that fills it is refused, and a row whose prompt and
/// generated tokens fill it ends with "length", whatever max_tokens the job asked for (as the endpoint's check:
/// prompt + max_tokens &lt;= context).
/// </summary>
sealed class RunningBatch(CausalLM model) : IDisposable
{
    sealed class Row(GenerationJob job, int length, int next)
    {
        public GenerationJob Job = job;
        public int Length = length;   // real (unpadded) slots in the cache
        public int Next = next;       // the token to feed at the next step
    }

    readonly List<Row> _rows = new();
    readonly int _context = model.Config.MaxPositionEmbeddings;
    KvCache? _cache;

    public int Count => _rows.Count;
    public long TokensGenerated => Interlocked.Read(ref _tokens);
    public long CancelledRows => Interlocked.Read(ref _cancelled);
    long _tokens, _cancelled;

    /// <summary>Prefills the job alone (exactly as serving it alone would) and, unless it already finished, joins it.</summary>
    public void Admit(GenerationJob job)
    {
        if (job.Prompt.Count >= _context)
            throw new ArgumentException($"the prompt is {job.Prompt.Count} tokens; the model's context is {_context}");
        var cache = new KvCache(model.Config.NumLayers);
        try
        {
            GeneratedToken first;
            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                using var ids = tensor(job.Prompt.Select(i => (long)i).ToArray(), ScalarType.Int64, model.Device).unsqueeze(0);
                var logits = Forward(ids, cache, null, [job.Adapter]);
                first = WithLogprobs(job, job.Sampler.Next(logits[0, -1]), logits[0, -1]);
            }
            Interlocked.Increment(ref _tokens);
            if (job.Emit(first) || (job.Prompt.Count + 1 >= _context && job.Finish("length"))) return;
            if (_cache is null) { _cache = cache; cache = null; }
            else _cache.AppendRows(cache);
            _rows.Add(new Row(job, job.Prompt.Count, first.Id));
        }
        finally { cache?.Dispose(); }
    }

    /// <summary>One decode step for every row; finished and cancelled rows leave.</summary>
    public void Step()
    {
        DropCancelled();
        if (_rows.Count == 0) return;
        long slots = _cache!.Length + 1;
        var mask = new long[_rows.Count * slots];
        for (int r = 0; r < _rows.Count; r++)
            for (long s = slots - (_rows[r].Length + 1); s < slots; s++) mask[r * slots + s] = 1;
        var done = new bool[_rows.Count];
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var ids = tensor(_rows.Select(r => (long)r.Next).ToArray(), ScalarType.Int64, model.Device).unsqueeze(1);
            var am = tensor(mask, [_rows.Count, slots], ScalarType.Int64, model.Device);
            var logits = Forward(ids, _cache, am, _rows.Select(r => r.Job.Adapter).ToArray());   // [B, 1, V]
            // One argmax for every greedy row; sampled rows draw from their own seeded sampler.
            long[] greedy = logits[.., 0].argmax(-1).cpu().data<long>().ToArray();
            for (int r = 0; r < _rows.Count; r++)
            {
                var row = _rows[r];
                int next = row.Job.Options.IsPlainGreedy ? (int)greedy[r] : row.Job.Sampler.Next(logits[r, 0]);
                row.Length++;
                row.Next = next;
                Interlocked.Increment(ref _tokens);
                // The row's sequence is its row.Length cached slots and the token just generated.
                done[r] = row.Job.Emit(WithLogprobs(row.Job, next, logits[r, 0])) || (row.Length + 1 >= _context && row.Job.Finish("length"));
            }
        }
        Keep(Enumerable.Range(0, _rows.Count).Where(r => !done[r]).ToList());
    }

    /// <summary>
    /// The token with, when the job asks, its log-probability and the top alternatives under the model's distribution
    /// (log-softmax of the raw logits: before temperature and top-p, as vLLM reports them by default).
    /// </summary>
    static GeneratedToken WithLogprobs(GenerationJob job, int id, Tensor logits)
    {
        if (job.TopLogprobs is not { } n) return new GeneratedToken(id);
        using var scope = NewDisposeScope();
        var lp = logits.to_type(ScalarType.Float32).log_softmax(-1);
        float chosen = lp[id].item<float>();
        if (n == 0) return new GeneratedToken(id, chosen, []);
        var (values, indices) = lp.topk(Math.Min(n, (int)lp.shape[0]));
        float[] v = values.cpu().data<float>().ToArray();
        long[] ix = indices.cpu().data<long>().ToArray();
        return new GeneratedToken(id, chosen, ix.Select((t, k) => ((int)t, v[k])).ToArray());
    }

    /// <summary>Ends every row with <paramref name="error"/> (a failed step must not strand its clients).</summary>
    public void FailAll(Exception error)
    {
        foreach (var r in _rows) r.Job.Fail(error);
        _rows.Clear();
        _cache?.Dispose();
        _cache = null;
    }

    public void CancelAll()
    {
        foreach (var r in _rows) r.Job.Finish("cancelled");
        _rows.Clear();
        _cache?.Dispose();
        _cache = null;
    }

    void DropCancelled()
    {
        var keep = new List<int>();
        for (int r = 0; r < _rows.Count; r++)
            if (_rows[r].Job.Cancel.IsCancellationRequested) { _rows[r].Job.Finish("cancelled"); Interlocked.Increment(ref _cancelled); }
            else keep.Add(r);
        if (keep.Count < _rows.Count) Keep(keep);
    }

    void Keep(List<int> keep)
    {
        if (keep.Count == _rows.Count) return;
        if (keep.Count == 0) { _rows.Clear(); _cache?.Dispose(); _cache = null; return; }
        _cache!.SelectRows(keep.Select(i => (long)i).ToArray());
        var rows = keep.Select(i => _rows[i]).ToList();
        _rows.Clear();
        _rows.AddRange(rows);
        // Slots that are padding in every remaining row are dead weight.
        _cache.TrimLeft(_cache.Length - _rows.Max(r => r.Length));
    }

    Tensor Forward(Tensor ids, KvCache cache, Tensor? mask, string?[] adapters)
    {
        model.State.RowAdapters = adapters;
        try { return model.Forward(ids, cache, mask, lastOnly: true); }
        finally { model.State.RowAdapters = null; }
    }

    public void Dispose() => CancelAll();
}
