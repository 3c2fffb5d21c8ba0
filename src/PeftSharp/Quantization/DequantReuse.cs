using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// One model's bounded cache of dense weights that a grad-recording quantised forward dequantised, kept for the
/// backward of the same call so it does not dequantise again. Newest wins: over the budget the oldest kept weight is
/// dropped (its backward dequantises into the scratch buffer as before), because backward visits layers in reverse.
/// Under gradient checkpointing the recomputed forward of one layer runs right before that layer's backward, so a
/// budget of one decoder layer removes every backward dequantisation (3 passes per step -> 2); without it only the
/// last <see cref="DefaultLayers"/> layers are reused. A model has no pool (reuse off) until one is attached to its
/// quantised weights (<see cref="KeepLayers"/>; <see cref="GradientCheckpointing.Enable"/> keeps one layer), so two
/// models in one process never share or reset each other's budget; <see cref="Detach"/> (checkpointing disabled, the
/// model disposed) frees the kept buffers. Memory cost: that many layers' dense weights in the compute dtype, beside
/// the one-weight scratch buffer (the planner's dequantisation term counts both).
/// </summary>
internal sealed class DequantReuse : IDisposable
{
    /// <summary>Decoder layers kept when checkpointing enables reuse: one is enough there (the "one layer at a time").</summary>
    public const int DefaultLayers = 1;

    readonly object _gate = new();
    readonly LinkedList<Entry> _held = new();
    readonly Dictionary<(long, ScalarType), Stack<Tensor>> _free = new();
    long _heldBytes, _freeBytes, _budget;
    bool _disposed;

    /// <summary>Bytes of dense weights that may be kept (held for a backward plus buffers ready for reuse).</summary>
    public long BudgetBytes
    {
        get => _budget;
        set { lock (_gate) { _budget = _disposed ? 0 : Math.Max(0, value); Trim(); } }
    }

    /// <summary>
    /// Keeps <paramref name="layers"/> decoder layers of <paramref name="model"/>'s quantised weights in fp32 (a 16-bit
    /// compute dtype fits twice as many): attaches a pool to its quantised weights, or resizes the one they have;
    /// 0 detaches it (reuse off).
    /// </summary>
    public static void KeepLayers(CausalLM model, int layers)
    {
        long budget = layers <= 0 ? 0 : layers * LayerBytes(model, ScalarType.Float32);
        if (budget == 0) { Detach(model); return; }
        var pool = Of(model) ?? new DequantReuse();
        foreach (var w in QuantizedWeights(model)) w.Reuse = pool;   // also a weight set since the pool was attached
        pool.BudgetBytes = budget;
    }

    /// <summary>Turns reuse off for <paramref name="model"/> and frees its kept weights and pooled buffers.</summary>
    public static void Detach(CausalLM model)
    {
        var pool = Of(model);
        foreach (var w in QuantizedWeights(model)) w.Reuse = null;
        pool?.Dispose();
    }

    /// <summary>The pool <paramref name="model"/>'s quantised weights share, or null (reuse off).</summary>
    public static DequantReuse? Of(CausalLM model) => QuantizedWeights(model).Select(w => w.Reuse).FirstOrDefault(r => r is not null);

    /// <summary>The bytes <paramref name="model"/> may keep: 0 without a pool.</summary>
    public static long BudgetOf(CausalLM model) => Of(model)?.BudgetBytes ?? 0;

    static IEnumerable<IQuantizedWeight> QuantizedWeights(CausalLM model) =>
        model.Linears().Select(t => t.Quantized).OfType<IQuantizedWeight>();

    /// <summary>The largest decoder layer's quantised weights, dense in <paramref name="dtype"/>.</summary>
    public static long LayerBytes(CausalLM model, ScalarType dtype) =>
        model.Layers.Select(l => l.modules().OfType<TunableLinear>().Sum(t => t.Quantized is null ? 0 : t.InFeatures * t.OutFeatures))
            .DefaultIfEmpty(0).Max() * Nf4Kernel.ElementBytes(dtype);

    /// <summary>A weight kept for its backward; <see cref="Dense"/> turns null when it was dropped for a newer one.</summary>
    internal sealed class Entry(long bytes)
    {
        public Tensor? Dense;
        public readonly long Bytes = bytes;
    }

    /// <summary>A buffer of <paramref name="shape"/> to dequantise into and keep, or null when it does not fit the budget.</summary>
    internal Entry? Reserve(long[] shape, ScalarType dtype)
    {
        long n = shape.Aggregate(1L, (a, b) => a * b);
        long bytes = n * Nf4Kernel.ElementBytes(dtype);
        lock (_gate)
        {
            if (bytes > _budget) return null;
            while (_heldBytes + bytes > _budget && _held.First is { } oldest) Release(oldest.Value, oldest);
            var e = new Entry(bytes);
            Tensor flat;
            if (_free.TryGetValue((n, dtype), out var stack) && stack.Count > 0) { flat = stack.Pop(); _freeBytes -= bytes; }
            else flat = empty(n, dtype).DetachFromDisposeScope();
            e.Dense = flat;
            _held.AddLast(e);
            _heldBytes += bytes;
            Trim();
            return e;
        }
    }

    /// <summary>The backward takes its kept weight (null when dropped); hand it back with <see cref="Return"/>.</summary>
    internal Tensor? Take(Entry e)
    {
        lock (_gate)
        {
            if (e.Dense is null) return null;
            var node = _held.Find(e);
            if (node is not null) { _held.Remove(node); _heldBytes -= e.Bytes; }
            var t = e.Dense;
            e.Dense = null;
            return t;
        }
    }

    /// <summary>A taken buffer goes back to the pool for the next forward of that size (freed once the pool is disposed).</summary>
    internal void Return(Tensor flat, long bytes)
    {
        lock (_gate)
        {
            if (_disposed) { flat.Dispose(); return; }
            var key = (flat.numel(), flat.dtype);
            if (!_free.TryGetValue(key, out var s)) _free[key] = s = new();
            s.Push(flat);
            _freeBytes += bytes;
            Trim();
        }
    }

    /// <summary>Frees every kept weight and pooled buffer; a backward still holding one frees it on return.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
            _budget = 0;
            while (_held.First is { } n) Release(n.Value, n);
            foreach (var s in _free.Values) while (s.Count > 0) s.Pop().Dispose();
            _free.Clear();
            _freeBytes = 0;
        }
    }

    void Release(Entry e, LinkedListNode<Entry> node)
    {
        _held.Remove(node);
        _heldBytes -= e.Bytes;
        var t = e.Dense!;
        e.Dense = null;
        var key = (t.numel(), t.dtype);
        if (!_free.TryGetValue(key, out var s)) _free[key] = s = new();
        s.Push(t);
        _freeBytes += e.Bytes;
    }

    /// <summary>Pooled buffers are freed while held + pooled exceed the budget.</summary>
    void Trim()
    {
        if (_heldBytes + _freeBytes <= _budget) return;
        foreach (var ((n, dtype), s) in _free)
            while (s.Count > 0 && _heldBytes + _freeBytes > _budget)
            {
                s.Pop().Dispose();
                _freeBytes -= n * Nf4Kernel.ElementBytes(dtype);
            }
        while (_heldBytes > _budget && _held.First is { } oldest) { Release(oldest.Value, oldest); Trim(); }
    }
}
