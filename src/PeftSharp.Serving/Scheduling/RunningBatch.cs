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
        // Prompt and generated ids (Next last): what a recomputation of the row (longrope's switch) feeds.
        public readonly List<int> Sequence = [.. job.Prompt, next];
    }

    readonly List<Row> _rows = new();
    readonly int _context = model.Config.MaxPositionEmbeddings;
    KvCache? _cache;

    public int Count => _rows.Count;
    /// <summary>The rows' shared cache (null while no row runs), for tests of its sizing.</summary>
    internal KvCache? Cache => _cache;
    public long TokensGenerated => Interlocked.Read(ref _tokens);
    public long CancelledRows => Interlocked.Read(ref _cancelled);
    /// <summary>Prefill forwards run and requests prefilled (their ratio is the prefill batching achieved).</summary>
    public long PrefillForwards => Interlocked.Read(ref _prefills);
    public long PrefilledJobs => Interlocked.Read(ref _prefilled);
    /// <summary>The most tokens (rows x padded length) one prefill forward has held.</summary>
    public long LargestPrefillTokens => Interlocked.Read(ref _largestPrefill);
    long _tokens, _cancelled, _prefills, _prefilled, _largestPrefill;

    /// <summary>
    /// Prefills waiting jobs in as few forwards as padding allows and joins those that did not already finish, all in
    /// one join after the last forward (each join copies the running rows' cache: one per forward would copy it as
    /// many times).
    /// Jobs are sorted by prompt length and grouped (at most <paramref name="maxPerForward"/> per forward) while the
    /// group's left-padded size stays within twice its real tokens, so one long prompt does not make seven short ones
    /// pay for its length, and within <paramref name="maxTokens"/> (rows x longest prompt: the forward's activations and
    /// the cache it joins, which `peft plan --serve` counts as <c>ServeRequest.MaxPrefillTokens</c>); a longer prompt goes alone. A row of a padded group sees exactly its own tokens at its own positions (the attention
    /// mask hides the padding and positions count real tokens), as a prefill alone would. A job whose prompt cannot
    /// fit, or whose group's forward fails, fails alone with its error.
    /// </summary>
    public void Admit(IReadOnlyList<GenerationJob> jobs, int maxPerForward, long maxTokens)
    {
        var fits = new List<GenerationJob>();
        foreach (var job in jobs)
        {
            if (job.Prompt.Count >= _context)
                job.Fail(new ArgumentException($"the prompt is {job.Prompt.Count} tokens; the model's context is {_context}"));
            else fits.Add(job);
        }
        fits.Sort((a, b) => a.Prompt.Count.CompareTo(b.Prompt.Count));
        var group = new List<GenerationJob>();
        var joining = new List<Joining>();
        long realTokens = 0;
        try
        {
            // A row that scores its prompt is prefilled alone, in chunks that keep every position's logits.
            foreach (var job in fits.Where(j => j.ScoresPrompt))
                if (PrefillScored(job, maxTokens) is { } j) joining.Add(j);
            foreach (var job in fits.Where(j => !j.ScoresPrompt))
            {
                // Sorted ascending, so the newest job is the group's longest.
                long padded = (long)job.Prompt.Count * (group.Count + 1);
                bool tooPadded = padded > 2 * (realTokens + job.Prompt.Count);
                if (group.Count > 0 && (group.Count == maxPerForward || tooPadded || padded > maxTokens))
                {
                    if (PrefillGroup(group) is { } j) joining.Add(j);
                    group = new List<GenerationJob>();
                    realTokens = 0;
                }
                group.Add(job);
                realTokens += job.Prompt.Count;
            }
            if (group.Count > 0 && PrefillGroup(group) is { } last) joining.Add(last);
        }
        finally { Join(joining); }
    }

    /// <summary>Prefilled rows waiting to join, with their own cache.</summary>
    sealed record Joining(List<Row> Rows, KvCache Cache);

    /// <summary>Prefills one job (as <see cref="Admit(IReadOnlyList{GenerationJob}, int, long)"/> with a single job).</summary>
    public void Admit(GenerationJob job) => Admit([job], 1, long.MaxValue);

    /// <summary>Prefills one group; its unfinished rows with their cache, or null when every job ended (or failed).</summary>
    Joining? PrefillGroup(List<GenerationJob> jobs)
    {
        int n = jobs.Count, longest = jobs.Max(j => j.Prompt.Count);
        var cache = new KvCache(model.Config.NumLayers) { ExpectedSlots = longest };
        try
        {
            var first = new GeneratedToken[n];
            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                // Left-padded ids and the mask of real tokens; one job alone needs neither padding nor a mask.
                var ids = new long[n * longest];
                var real = new long[n * longest];
                for (int r = 0; r < n; r++)
                {
                    var prompt = jobs[r].Prompt;
                    int pad = longest - prompt.Count;
                    for (int i = 0; i < prompt.Count; i++) { ids[r * longest + pad + i] = prompt[i]; real[r * longest + pad + i] = 1; }
                }
                var idsT = tensor(ids, [n, longest], ScalarType.Int64, model.Device);
                var mask = n == 1 ? null : tensor(real, [n, longest], ScalarType.Int64, model.Device);
                var logits = Forward(idsT, cache, mask, jobs.Select(j => j.Adapter).ToArray());   // [n, 1, V]
                Interlocked.Increment(ref _prefills);
                Interlocked.Add(ref _prefilled, n);
                if ((long)n * longest > _largestPrefill) Interlocked.Exchange(ref _largestPrefill, (long)n * longest);
                for (int r = 0; r < n; r++)
                    first[r] = WithLogprobs(jobs[r], jobs[r].Sampler.Next(logits[r, -1]), logits[r, -1]);
            }
            var keep = new List<int>();
            for (int r = 0; r < n; r++)
            {
                if (!Emit(jobs[r], first[r], jobs[r].Prompt.Count)) keep.Add(r);
            }
            if (keep.Count == 0) return null;
            if (keep.Count < n)
            {
                // Exactly the kept rows' slots: the join copies them once more into the batch's cache.
                long trim = longest - keep.Max(r => jobs[r].Prompt.Count);
                cache.ExpectedSlots = longest - trim;
                cache.SelectRows(keep.Select(r => (long)r).ToArray(), trim);
            }
            var joining = new Joining(keep.Select(r => new Row(jobs[r], jobs[r].Prompt.Count, first[r].Id)).ToList(), cache);
            cache = null;
            return joining;
        }
        catch (Exception e)
        {
            foreach (var job in jobs) job.Fail(e);
        }
        finally { cache?.Dispose(); }
        return null;
    }

    /// <summary>
    /// Prefills a row that scores its prompt (<see cref="PromptScorer"/>): the scores go to the job before its first
    /// token; with max_tokens 0 it ends there ("length"), else it joins as any prefilled row.
    /// </summary>
    Joining? PrefillScored(GenerationJob job, long maxTokens)
    {
        var cache = new KvCache(model.Config.NumLayers) { ExpectedSlots = job.Prompt.Count };
        bool generates = job.Options.MaxNewTokens > 0;
        try
        {
            model.State.RowAdapters = [job.Adapter];
            GeneratedToken first;
            try
            {
                var scores = PromptScorer.Prefill(model, job.Prompt, job.TopLogprobs ?? 0, cache, PromptScorer.ChunkTokens(model.Config.VocabSize, maxTokens),
                    generates ? logits => WithLogprobs(job, job.Sampler.Next(logits), logits) : null, out first);
                job.Scored(scores);
            }
            finally { model.State.RowAdapters = null; }
            Interlocked.Increment(ref _prefills);
            Interlocked.Increment(ref _prefilled);
            if (!generates) { job.Finish("length"); return null; }
            if (Emit(job, first, job.Prompt.Count)) return null;
            var joining = new Joining([new Row(job, job.Prompt.Count, first.Id)], cache);
            cache = null;
            return joining;
        }
        catch (Exception e) { job.Fail(e); }
        finally { cache?.Dispose(); }
        return null;
    }

    /// <summary>
    /// One decode step for every row; finished and cancelled rows leave. A row whose sequence passes Phi-3 longrope's
    /// original_max_position_embeddings at this step is recomputed alone instead (<see cref="Recompute"/>) and
    /// rejoins after the step.
    /// </summary>
    public void Step()
    {
        DropCancelled();
        if (_rows.Count == 0) return;
        var stale = Enumerable.Range(0, _rows.Count).Where(r => model.CacheGoesStale(_rows[r].Length, 1)).ToList();
        var recomputed = new List<Joining>();
        if (stale.Count > 0)
        {
            var staleRows = stale.Select(r => _rows[r]).ToList();
            Keep(Enumerable.Range(0, _rows.Count).Except(stale).ToList());
            foreach (var row in staleRows)
                if (Recompute(row) is { } cache) recomputed.Add(new Joining([row], cache));
        }
        // Joined even when the step fails, so the scheduler's FailAll ends them too.
        try { if (_rows.Count > 0) Decode(); }
        finally { Join(recomputed); }
    }

    /// <summary>
    /// Phi-3 longrope: the row's cached keys were rotated with the short factors, and from this step on its positions
    /// need the long ones. As TextGenerator does (after transformers' Phi3ForCausalLM.prepare_inputs_for_generation,
    /// which drops the cache at the switch), the row's whole sequence is run again, alone, so every key is rotated
    /// with the long factors, and the next token comes from that forward. Returns the row's new cache, or null when
    /// the row finished (or failed) with this token.
    /// </summary>
    KvCache? Recompute(Row row)
    {
        var cache = new KvCache(model.Config.NumLayers) { ExpectedSlots = row.Sequence.Count };
        try
        {
            GeneratedToken token;
            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                var ids = tensor(row.Sequence.Select(i => (long)i).ToArray(), ScalarType.Int64, model.Device).unsqueeze(0);
                var logits = Forward(ids, cache, null, [row.Job.Adapter]);   // [1, 1, V]
                token = WithLogprobs(row.Job, row.Job.Sampler.Next(logits[0, -1]), logits[0, -1]);
            }
            row.Length = row.Sequence.Count;
            row.Next = token.Id;
            row.Sequence.Add(token.Id);
            if (!Emit(row.Job, token, row.Length)) { var kept = cache; cache = null; return kept; }
        }
        catch (Exception e) { row.Job.Fail(e); }
        finally { cache?.Dispose(); }
        return null;
    }

    /// <summary>
    /// Adds rows, with their own caches (which this takes over), after the running rows (left padding lines the caches
    /// up), in one copy: the joined cache is built with the slots every row can still fill (<see cref="ExpectedSlots"/>),
    /// so the decode steps after it write in place. The rows join first, so a failed join's error (the scheduler's
    /// FailAll) ends them too.
    /// </summary>
    void Join(List<Joining> joining)
    {
        if (joining.Count == 0) return;
        try
        {
            foreach (var j in joining) _rows.AddRange(j.Rows);
            _cache ??= new KvCache(model.Config.NumLayers);
            _cache.ExpectedSlots = ExpectedSlots(Math.Max(_cache.Length, joining.Max(j => j.Cache.Length)));
            _cache.AppendRows(joining.Select(j => j.Cache).ToList());
        }
        finally { foreach (var j in joining) j.Cache.Dispose(); }
    }

    /// <summary>
    /// The most slots the cache holds until a row leaves: the rows end at the same slot (left padding), so its length
    /// (<paramref name="length"/>, the longest row) plus the slots stored until the first row ends (the fewest any row
    /// still stores; a stop id may end one sooner). Every leave rebuilds the cache (<see cref="Keep"/>), which sizes it
    /// again, so room for more would never be written in place. Not the most any row still stores: rows of very
    /// different lengths (a long prompt near the end of its tokens beside a short one with many left) would make every
    /// row as wide as the longest plus the short one's whole budget, up to twice the context, while the memory plan
    /// counts max_batch x context. This way a row is never wider than the context: the longest row stores at most
    /// context - 1 slots (<see cref="Emit"/>) and the first row ends no later than it.
    /// </summary>
    long ExpectedSlots(long length) => length + _rows.Min(SlotsLeft);

    /// <summary>
    /// Sends a job its token; true when the job is finished: a stop id, max tokens, or the context full (the row's
    /// sequence is its <paramref name="cached"/> slots and this token).
    /// </summary>
    bool Emit(GenerationJob job, GeneratedToken token, int cached)
    {
        Interlocked.Increment(ref _tokens);
        return job.Emit(token) || (cached + 1 >= _context && job.Finish("length"));
    }

    void Decode()
    {
        long slots = _cache!.Length + 1;
        _cache.ExpectedSlots = ExpectedSlots(_cache.Length);
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
                row.Sequence.Add(next);
                done[r] = Emit(row.Job, WithLogprobs(row.Job, next, logits[r, 0]), row.Length);
            }
        }
        Keep(Enumerable.Range(0, _rows.Count).Where(r => !done[r]).ToList());
    }

    /// <summary>
    /// The slots a row will still add to the cache: its last stored token is the one before max_tokens is reached (the
    /// last generated one is never fed) or before the context is full (see <see cref="Emit"/>); a stop id may end it sooner.
    /// In longs: max_tokens may be int.MaxValue (the context is the limit then), and the join sizes the cache by it.
    /// </summary>
    long SlotsLeft(Row row) => Math.Min((long)row.Job.Prompt.Count + row.Job.Options.MaxNewTokens - 1, _context - 1) - row.Length;

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
        var rows = keep.Select(i => _rows[i]).ToList();
        _rows.Clear();
        _rows.AddRange(rows);
        // Slots that are padding in every remaining row are dead weight; the rebuilt cache keeps room for the slots the
        // rows will still fill, so the next step writes in place.
        long length = _rows.Max(r => r.Length);
        _cache!.ExpectedSlots = ExpectedSlots(length);
        _cache.SelectRows(keep.Select(i => (long)i).ToArray(), _cache.Length - length);
    }

    Tensor Forward(Tensor ids, KvCache cache, Tensor? mask, string?[] adapters)
    {
        model.State.RowAdapters = adapters;
        try { return model.Forward(ids, cache, mask, lastOnly: true); }
        finally { model.State.RowAdapters = null; }
    }

    public void Dispose() => CancelAll();
}
