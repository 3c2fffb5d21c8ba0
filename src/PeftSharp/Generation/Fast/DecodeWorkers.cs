using System.Diagnostics;

namespace PeftSharp.Generation.Fast;

/// <summary>A job split into chunks that any thread of <see cref="DecodeWorkers"/> may run, in any order.</summary>
internal abstract class ChunkedJob
{
    public int Chunks { get; protected set; }
    public abstract void RunChunk(int chunk);
}

/// <summary>
/// A small persistent pool for the batch-1 decode kernels. One decode step runs ~100 short parallel jobs (a few
/// microseconds to a millisecond each), so a task per job (Parallel.For) costs as much as the work: here the calling
/// thread posts a job and works on it too, workers spin briefly for the next job and then park.
/// Chunks are claimed from one 64-bit counter that holds the job's generation in its high half, so a worker that
/// wakes late (the box is busy) finds the generation moved on and claims nothing; the caller, not a headcount,
/// decides when a job is done (every chunk finished), so a descheduled worker never holds the step up unless it is
/// in the middle of a chunk.
/// </summary>
internal sealed class DecodeWorkers
{
    static readonly object Gate = new();
    static DecodeWorkers? _shared;

    /// <summary>
    /// The process's pool with <paramref name="threads"/> - 1 workers (the caller is the last thread); a different
    /// count retires the previous pool (a generation still using it then runs its jobs on its own thread).
    /// </summary>
    public static DecodeWorkers ForThreads(int threads)
    {
        lock (Gate)
        {
            if (_shared is null || _shared._workers.Length != Math.Max(0, threads - 1)) _shared = new DecodeWorkers(threads - 1, _shared);
            return _shared;
        }
    }

    /// <summary>How long an idle worker spins for the next job before it parks (one decode step's gaps are shorter).</summary>
    static readonly long SpinTicks = Stopwatch.Frequency / 5000;   // 200 us

    readonly Thread[] _workers;
    readonly object _park = new();
    readonly object _running = new();
    long _counter;            // generation << 32 | next unclaimed chunk
    int _remaining;           // chunks of the current job not yet finished
    int _sleepers;
    volatile ChunkedJob? _job;
    volatile bool _retired;

    DecodeWorkers(int workers, DecodeWorkers? previous)
    {
        previous?.Retire();
        _workers = new Thread[Math.Max(0, workers)];
        for (int i = 0; i < _workers.Length; i++)
        {
            _workers[i] = new Thread(Work) { IsBackground = true, Name = $"peft-decode-{i + 1}" };
            _workers[i].Start();
        }
    }

    public int Threads => _workers.Length + 1;

    /// <summary>Runs every chunk of <paramref name="job"/> on the pool and the calling thread; returns when all are done.</summary>
    public void Run(ChunkedJob job)
    {
        if (job.Chunks <= 0) return;
        // One job at a time: a second generating thread (tests, a server) runs its job alone rather than wait.
        if (job.Chunks == 1 || _workers.Length == 0 || !Monitor.TryEnter(_running)) { RunInline(job); return; }
        try { Post(job); }
        finally { Monitor.Exit(_running); }
    }

    static void RunInline(ChunkedJob job) { for (int c = 0; c < job.Chunks; c++) job.RunChunk(c); }

    void Post(ChunkedJob job)
    {
        _job = job;
        Volatile.Write(ref _remaining, job.Chunks);
        long generation = (Volatile.Read(ref _counter) >> 32) + 1;
        Interlocked.Exchange(ref _counter, generation << 32);   // publishes the job (a full fence)
        if (Volatile.Read(ref _sleepers) > 0) lock (_park) Monitor.PulseAll(_park);
        Claim(job, generation);
        var spin = new SpinWait();
        while (Volatile.Read(ref _remaining) > 0) spin.SpinOnce(sleep1Threshold: -1);
    }

    /// <summary>Claims and runs chunks of the job of <paramref name="generation"/> until none is left.</summary>
    void Claim(ChunkedJob job, long generation)
    {
        while (true)
        {
            long v = Volatile.Read(ref _counter);
            if (v >> 32 != generation || (int)(v & 0xffffffff) >= job.Chunks) return;
            if (Interlocked.CompareExchange(ref _counter, v + 1, v) != v) continue;
            job.RunChunk((int)(v & 0xffffffff));
            Interlocked.Decrement(ref _remaining);
        }
    }

    void Work()
    {
        long seen = 0;
        while (!_retired)
        {
            long generation = WaitForJob(seen);
            if (generation < 0) return;
            seen = generation;
            // The job read after the generation: a claim for this generation only succeeds while it is current.
            if (_job is { } job) Claim(job, generation);
        }
    }

    /// <summary>Spins, then parks, until a generation after <paramref name="seen"/> is posted; -1 once retired.</summary>
    long WaitForJob(long seen)
    {
        long start = Stopwatch.GetTimestamp();
        var spin = new SpinWait();
        while (Stopwatch.GetTimestamp() - start < SpinTicks)
        {
            long g = Volatile.Read(ref _counter) >> 32;
            if (g != seen) return g;
            if (_retired) return -1;
            spin.SpinOnce(sleep1Threshold: -1);
        }
        lock (_park)
        {
            Interlocked.Increment(ref _sleepers);
            try
            {
                while (true)
                {
                    long g = Volatile.Read(ref _counter) >> 32;
                    if (g != seen) return g;
                    if (_retired) return -1;
                    Monitor.Wait(_park);
                }
            }
            finally { Interlocked.Decrement(ref _sleepers); }
        }
    }

    void Retire()
    {
        _retired = true;
        lock (_park) Monitor.PulseAll(_park);
    }
}
