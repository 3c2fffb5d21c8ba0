using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// A bounded cache of dense weights that a grad-recording quantised forward dequantised, kept for the backward of
/// the same call so it does not dequantise again. Newest wins: over the budget the oldest kept weight is dropped
/// (its backward dequantises into the scratch buffer as before), because backward visits layers in reverse.
/// Under gradient checkpointing the recomputed forward of one layer runs right before that layer's backward, so a
/// budget of one decoder layer removes every backward dequantisation (3 passes per step -> 2); without it only the
/// last <see cref="DefaultLayers"/> layers are reused. The budget is bytes, 0 (off) until a model sets it
/// (<see cref="GradientCheckpointing.Enable"/> sets one layer); memory cost: that many layers' dense weights in the
/// compute dtype, beside the one-weight scratch buffer (the planner's dequantisation term counts both).
/// </summary>
internal static class DequantReuse
{
    /// <summary>Decoder layers kept when checkpointing enables reuse: one is enough there (the "one layer at a time").</summary>
    public const int DefaultLayers = 1;

    static readonly object Gate = new();
    static readonly LinkedList<Entry> Held = new();
    static readonly Dictionary<(long, ScalarType), Stack<Tensor>> Free = new();
    static long _heldBytes, _freeBytes, _budget;

    /// <summary>Bytes of dense weights that may be kept (held for a backward plus buffers ready for reuse); 0 turns reuse off.</summary>
    public static long BudgetBytes
    {
        get => _budget;
        set { lock (Gate) { _budget = Math.Max(0, value); Trim(); } }
    }

    /// <summary>Sets the budget to <paramref name="layers"/> decoder layers of <paramref name="model"/>'s quantised weights in fp32 (a 16-bit compute dtype fits twice as many).</summary>
    public static void KeepLayers(CausalLM model, int layers) =>
        BudgetBytes = layers <= 0 ? 0 : layers * LayerBytes(model, ScalarType.Float32);

    /// <summary>The largest decoder layer's quantised weights, dense in <paramref name="dtype"/>.</summary>
    public static long LayerBytes(CausalLM model, ScalarType dtype) =>
        model.Layers.Select(l => l.modules().OfType<TunableLinear>().Sum(t => t.Quantized is null ? 0 : t.InFeatures * t.OutFeatures))
            .DefaultIfEmpty(0).Max() * (dtype == ScalarType.Float32 ? 4 : 2);

    /// <summary>A weight kept for its backward; <see cref="Dense"/> turns null when it was dropped for a newer one.</summary>
    internal sealed class Entry(long bytes)
    {
        public Tensor? Dense;
        public readonly long Bytes = bytes;
    }

    /// <summary>A buffer of <paramref name="shape"/> to dequantise into and keep, or null when it does not fit the budget.</summary>
    internal static Entry? Reserve(long[] shape, ScalarType dtype)
    {
        long n = shape.Aggregate(1L, (a, b) => a * b);
        long bytes = n * (dtype == ScalarType.Float32 ? 4 : 2);
        lock (Gate)
        {
            if (bytes > _budget) return null;
            while (_heldBytes + bytes > _budget && Held.First is { } oldest) Release(oldest.Value, oldest);
            var e = new Entry(bytes);
            Tensor flat;
            if (Free.TryGetValue((n, dtype), out var stack) && stack.Count > 0) { flat = stack.Pop(); _freeBytes -= bytes; }
            else flat = empty(n, dtype).DetachFromDisposeScope();
            e.Dense = flat;
            Held.AddLast(e);
            _heldBytes += bytes;
            Trim();
            return e;
        }
    }

    /// <summary>The backward takes its kept weight (null when dropped); hand it back with <see cref="Return"/>.</summary>
    internal static Tensor? Take(Entry e)
    {
        lock (Gate)
        {
            if (e.Dense is null) return null;
            var node = Held.Find(e);
            if (node is not null) { Held.Remove(node); _heldBytes -= e.Bytes; }
            var t = e.Dense;
            e.Dense = null;
            return t;
        }
    }

    /// <summary>A taken buffer goes back to the pool for the next forward of that size.</summary>
    internal static void Return(Tensor flat, long bytes)
    {
        lock (Gate)
        {
            var key = (flat.numel(), flat.dtype);
            if (!Free.TryGetValue(key, out var s)) Free[key] = s = new();
            s.Push(flat);
            _freeBytes += bytes;
            Trim();
        }
    }

    /// <summary>Drops every kept weight and pooled buffer.</summary>
    public static void Clear()
    {
        lock (Gate)
        {
            while (Held.First is { } n) Release(n.Value, n);
            foreach (var s in Free.Values) while (s.Count > 0) s.Pop().Dispose();
            Free.Clear();
            _freeBytes = 0;
        }
    }

    static void Release(Entry e, LinkedListNode<Entry> node)
    {
        Held.Remove(node);
        _heldBytes -= e.Bytes;
        var t = e.Dense!;
        e.Dense = null;
        var key = (t.numel(), t.dtype);
        if (!Free.TryGetValue(key, out var s)) Free[key] = s = new();
        s.Push(t);
        _freeBytes += e.Bytes;
    }

    /// <summary>Pooled buffers are freed while held + pooled exceed the budget.</summary>
    static void Trim()
    {
        if (_heldBytes + _freeBytes <= _budget) return;
        foreach (var ((n, dtype), s) in Free)
            while (s.Count > 0 && _heldBytes + _freeBytes > _budget)
            {
                s.Pop().Dispose();
                _freeBytes -= n * (dtype == ScalarType.Float32 ? 4 : 2);
            }
        while (_heldBytes > _budget && Held.First is { } oldest) { Release(oldest.Value, oldest); Trim(); }
    }
}
