using System.Diagnostics;

namespace PeftSharp.Models;

/// <summary>
/// Opt-in wall-clock profile of the forward by op kind (the bench's <c>lora-step --profile</c>). On CPU every libtorch
/// op runs synchronously on the calling thread, so a stopwatch around a call is that op's time (kernel plus the managed
/// wrapper and dispatch). Sections nest; each kind gets its exclusive time (a section's children are subtracted).
/// Off (no <see cref="Current"/>), a section costs one thread-static read.
/// </summary>
internal sealed class ForwardProfiler
{
    [ThreadStatic] static ForwardProfiler? _current;

    /// <summary>The profiler sections on this thread report to; null (the default) profiles nothing.</summary>
    public static ForwardProfiler? Current { get => _current; set => _current = value; }

    readonly Dictionary<string, (double Seconds, long Calls)> _totals = new();
    readonly Stack<(string Kind, long Start, long Children)> _open = new();

    /// <summary>Exclusive seconds and call counts per kind since the last <see cref="Reset"/>.</summary>
    public IReadOnlyDictionary<string, (double Seconds, long Calls)> Totals => _totals;

    public void Reset() => _totals.Clear();

    /// <summary>Times the enclosed code as <paramref name="kind"/> when a profiler is current; otherwise does nothing.</summary>
    public static Section Measure(string kind)
    {
        var p = _current;
        if (p is null) return default;
        p._open.Push((kind, Stopwatch.GetTimestamp(), 0));
        return new Section(p);
    }

    void Close()
    {
        var (kind, start, children) = _open.Pop();
        long elapsed = Stopwatch.GetTimestamp() - start;
        if (_open.TryPop(out var parent)) _open.Push((parent.Kind, parent.Start, parent.Children + elapsed));
        var (s, n) = _totals.GetValueOrDefault(kind);
        _totals[kind] = (s + (double)(elapsed - children) / Stopwatch.Frequency, n + 1);
    }

    public readonly struct Section : IDisposable
    {
        readonly ForwardProfiler? _p;
        internal Section(ForwardProfiler p) => _p = p;
        public void Dispose() => _p?.Close();
    }
}
