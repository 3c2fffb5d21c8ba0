using System.Diagnostics;

namespace PeftSharp.Quantization;

/// <summary>
/// Process-wide counts of quantised-weight dequantisations (calls, weights, wall time) by pass, and of backward
/// passes that reused the forward's dense weight instead: what the qlora-step bench prints to explain the
/// QLoRA/LoRA step time ratio. Always on (two interlocked adds per quantised matmul).
/// </summary>
internal static class DequantStats
{
    public enum Pass { Forward, Backward }

    static long _fwdCalls, _fwdElems, _fwdTicks, _bwdCalls, _bwdElems, _bwdTicks, _reusedCalls, _reusedElems;

    public readonly record struct Snapshot(long ForwardCalls, long ForwardWeights, double ForwardSeconds,
        long BackwardCalls, long BackwardWeights, double BackwardSeconds, long ReusedCalls, long ReusedWeights)
    {
        public long Calls => ForwardCalls + BackwardCalls;
        public long Weights => ForwardWeights + BackwardWeights;
        public double Seconds => ForwardSeconds + BackwardSeconds;

        public static Snapshot operator -(Snapshot a, Snapshot b) => a + b.Negated();

        public static Snapshot operator +(Snapshot a, Snapshot b) => new(a.ForwardCalls + b.ForwardCalls, a.ForwardWeights + b.ForwardWeights,
            a.ForwardSeconds + b.ForwardSeconds, a.BackwardCalls + b.BackwardCalls, a.BackwardWeights + b.BackwardWeights,
            a.BackwardSeconds + b.BackwardSeconds, a.ReusedCalls + b.ReusedCalls, a.ReusedWeights + b.ReusedWeights);

        Snapshot Negated() => new(-ForwardCalls, -ForwardWeights, -ForwardSeconds, -BackwardCalls, -BackwardWeights, -BackwardSeconds, -ReusedCalls, -ReusedWeights);
    }

    public static void Add(Pass pass, long weights, long ticks)
    {
        if (pass == Pass.Forward) { Interlocked.Increment(ref _fwdCalls); Interlocked.Add(ref _fwdElems, weights); Interlocked.Add(ref _fwdTicks, ticks); }
        else { Interlocked.Increment(ref _bwdCalls); Interlocked.Add(ref _bwdElems, weights); Interlocked.Add(ref _bwdTicks, ticks); }
    }

    public static void AddReused(long weights) { Interlocked.Increment(ref _reusedCalls); Interlocked.Add(ref _reusedElems, weights); }

    public static Snapshot Read() => new(Volatile.Read(ref _fwdCalls), Volatile.Read(ref _fwdElems), (double)Volatile.Read(ref _fwdTicks) / Stopwatch.Frequency,
        Volatile.Read(ref _bwdCalls), Volatile.Read(ref _bwdElems), (double)Volatile.Read(ref _bwdTicks) / Stopwatch.Frequency,
        Volatile.Read(ref _reusedCalls), Volatile.Read(ref _reusedElems));
}
