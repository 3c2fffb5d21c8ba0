using System.Collections.Concurrent;
using PeftSharp.Models;

namespace PeftSharp.Serving.Scheduling;

/// <summary>
/// Continuous batching: one background thread owns the model. Between decode steps it runs queued model actions
/// (adapter loads/unloads), drops cancelled rows, prefills the waiting requests (several per forward, left-padded)
/// and joins them to the running batch (up to <c>maxBatch</c> rows), then decodes one token for every row. Nothing else touches the model.
/// </summary>
internal sealed class BatchScheduler : IDisposable
{
    readonly CausalLM _model;
    readonly int _maxBatch, _maxQueue, _maxPrefill, _maxPrefillTokens;
    readonly ConcurrentQueue<GenerationJob> _queue = new();
    readonly ConcurrentQueue<Action<CausalLM>> _actions = new();
    readonly ManualResetEventSlim _wake = new(false);
    readonly RunningBatch _batch;
    readonly Thread _worker;
    int _queued, _inFlight;
    readonly object _actionLock = new();
    bool _closed;
    volatile bool _accepting = true, _stopped;

    /// <remarks><c>maxPrefill</c>: Most waiting requests prefilled in one forward (1: each alone; default: max batch).
    /// <c>maxPrefillTokens</c>: most tokens (rows x longest prompt) in one such forward; a longer prompt goes alone.</remarks>
    public BatchScheduler(CausalLM model, int maxBatch, int maxQueue, int? maxPrefill = null, int maxPrefillTokens = PeftSharp.Memory.ServeRequest.DefaultMaxPrefillTokens)
    {
        if (maxPrefill < 1) throw new ArgumentException($"max prefill batch must be >= 1 (got {maxPrefill})");
        if (maxPrefillTokens < 1) throw new ArgumentException($"max prefill tokens must be >= 1 (got {maxPrefillTokens})");
        _maxPrefill = maxPrefill ?? maxBatch;
        _maxPrefillTokens = maxPrefillTokens;
        if (maxBatch < 1) throw new ArgumentException($"max batch must be >= 1 (got {maxBatch})");
        if (maxQueue < 0) throw new ArgumentException($"max queue must be >= 0 (got {maxQueue})");
        _model = model;
        _maxBatch = maxBatch;
        _maxQueue = maxQueue;
        _batch = new RunningBatch(model);
        _worker = new Thread(Loop) { IsBackground = true, Name = "peft-batch-worker" };
        _worker.Start();
    }

    public CausalLM Model => _model;
    /// <summary>Rows being decoded now (read from any thread; for tests and health).</summary>
    public int ActiveRows { get; private set; }
    public int QueuedJobs => Volatile.Read(ref _queued);
    /// <summary>Model actions (adapter loads/unloads) waiting for the worker (tests line requests up against them).</summary>
    internal int QueuedActions => _actions.Count;
    /// <summary>Tokens emitted and rows ended by cancellation since start (health and tests).</summary>
    public long TokensGenerated => _batch.TokensGenerated;
    public long CancelledRows => _batch.CancelledRows;
    /// <summary>Prefill forwards run and requests they prefilled (health and tests).</summary>
    public long PrefillForwards => _batch.PrefillForwards;
    public long PrefilledJobs => _batch.PrefilledJobs;
    /// <summary>The most tokens (rows x padded length) one prefill forward has held (health and tests).</summary>
    public long LargestPrefillTokens => _batch.LargestPrefillTokens;

    /// <summary>False when the queue is full or the server is shutting down (the caller answers 429/503).</summary>
    public bool TryEnqueue(GenerationJob job)
    {
        if (!_accepting) return false;
        if (Interlocked.Increment(ref _queued) > _maxQueue) { Interlocked.Decrement(ref _queued); return false; }
        Interlocked.Increment(ref _inFlight);
        job.Done = () => Interlocked.Decrement(ref _inFlight);
        _queue.Enqueue(job);
        _wake.Set();
        return true;
    }

    public bool Accepting => _accepting;

    /// <summary>The running rows' shared cache (null while none runs); read it on the worker only (from <see cref="AfterStep"/>).</summary>
    internal KvCache? RunningCache => _batch.Cache;

    /// <summary>Test hook: runs on the worker after every step (e.g. to slow decoding down).</summary>
    internal Action? AfterStep { get; set; }

    /// <summary>Runs <paramref name="action"/> on the worker thread between steps (the only safe way to change the model).</summary>
    public Task<T> RunOnModelAsync<T>(Func<CausalLM, T> action)
    {
        var tcs = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        void Run(CausalLM m)
        {
            try { tcs.SetResult(action(m)); }
            catch (Exception e) { tcs.SetException(e); }
        }
        lock (_actionLock)
        {
            // Once the worker has exited the model is free, so late actions (unloads at shutdown) run right here.
            if (_closed) Run(_model);
            else _actions.Enqueue(Run);
        }
        _wake.Set();
        return tcs.Task;
    }

    /// <summary>Stops admitting; waits up to <paramref name="grace"/> for running and queued requests to finish, then cancels the rest.</summary>
    public async Task DrainAsync(TimeSpan grace)
    {
        _accepting = false;
        var deadline = DateTime.UtcNow + grace;
        while (Volatile.Read(ref _inFlight) > 0 && DateTime.UtcNow < deadline) await Task.Delay(20);
        Dispose();
    }

    void Loop()
    {
        while (!_stopped)
        {
            _wake.Reset();
            while (_actions.TryDequeue(out var act)) act(_model);
            try
            {
                // Every request waiting now is prefilled before the next decode step, in batched forwards.
                var waiting = new List<GenerationJob>();
                while (_batch.Count + waiting.Count < _maxBatch && _queue.TryDequeue(out var job))
                {
                    Interlocked.Decrement(ref _queued);
                    if (job.Cancel.IsCancellationRequested) { job.Finish("cancelled"); continue; }
                    waiting.Add(job);
                }
                if (waiting.Count > 0) _batch.Admit(waiting, _maxPrefill, _maxPrefillTokens);
                _batch.Step();
                AfterStep?.Invoke();
            }
            catch (Exception e) { _batch.FailAll(e); }
            ActiveRows = _batch.Count;
            if (_batch.Count == 0 && _queue.IsEmpty && _actions.IsEmpty) _wake.Wait(TimeSpan.FromMilliseconds(250));
        }
        _batch.CancelAll();
        while (_queue.TryDequeue(out var left)) left.Finish("cancelled");
        lock (_actionLock)
        {
            while (_actions.TryDequeue(out var act)) act(_model);
            _closed = true;
        }
        ActiveRows = 0;
    }

    public void Dispose()
    {
        if (_stopped) return;
        _accepting = false;
        _stopped = true;
        _wake.Set();
        if (Thread.CurrentThread != _worker) _worker.Join();
    }
}
