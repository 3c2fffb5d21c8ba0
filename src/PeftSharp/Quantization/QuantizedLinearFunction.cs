using System.Diagnostics;
using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// y = x W^T for a quantised W without keeping W: forward dequantises, multiplies and frees it; backward
/// dequantises again for grad_x = g W. The base never gets a gradient (it is not an input of the graph).
/// On CPU the dense weight is written into one scratch buffer per thread and dtype, reused by every layer, forward and
/// backward, without a fresh allocation (and its page faults: a weight over glibc's mmap threshold is a new mapping each
/// time) per call. A weight over one tile (<see cref="TileBytes"/>) goes through it a tile of rows at a time
/// (<see cref="Tiled"/>, split over torch's OpenMP team), so in fp32 the buffer holds one tile; the whole weight still goes there for the 16-bit
/// backward, and the buffer is then sized for the largest such weight.
/// Where the weight's model has a <see cref="DequantReuse"/> pool, a grad-recording forward dequantises into a kept buffer instead and
/// its backward multiplies by that buffer (the same bits) rather than dequantising again.
/// </summary>
internal sealed class QuantizedLinearFunction : autograd.SingleTensorFunction<QuantizedLinearFunction>
{
    public override string Name => "QuantizedLinear";

    [ThreadStatic] static Dictionary<ScalarType, Tensor>? _scratch;

    public static Tensor Apply(Tensor x, IQuantizedWeight w, ScalarType dtype)
    {
        // Nothing to differentiate: skip the autograd node (and the output-shaped buffer it caches).
        if (!is_grad_enabled() || !x.requires_grad) return Compute(x, w, dtype, DequantStats.Pass.Forward);
        return apply(x, w, dtype);
    }

    /// <summary>Bytes this thread's scratch buffers hold (the planner's DequantBufferBytes: one tile in fp32 on CPU).</summary>
    internal static long ScratchBytes => (_scratch?.Values.Sum(t => t.numel() * t.ElementSize) ?? 0) + (_panels?.Bytes ?? 0);

    /// <summary>
    /// Frees this thread's scratch buffers (they are rebuilt on the next quantised matmul) and the last grad_x this
    /// thread's custom backwards returned (<see cref="Kernels.ReturnedGradients"/>).
    /// </summary>
    public static void ReleaseScratch()
    {
        Kernels.ReturnedGradients.Release();
        _panels?.Dispose();
        _panels = null;
        if (_scratch is null) return;
        foreach (var t in _scratch.Values) t.Dispose();
        _scratch = null;
    }

    static bool KernelPath(IQuantizedWeight w, ScalarType dtype, Device device) =>
        device.type == DeviceType.CPU && w.Device.type == DeviceType.CPU && Nf4Kernel.Supports(dtype);

    /// <summary>
    /// Bytes of dense weight the tiled path's tiles hold at once, all team threads together (see <see cref="Tiled"/>);
    /// 0 turns tiling off (every matmul takes the whole dequantised weight). The default (2 MiB, the planner's figure)
    /// gives each of two threads a 1 MiB tile, one core's L2 on the bench box: in the qlora-step bench (team of two)
    /// 1 MiB in all and 4 MiB in all were 5-13% slower at 116M.
    /// </summary>
    internal static long TileBytes { get; set; } = PeftSharp.Memory.MemoryPlanner.CpuDequantTileBytes;

    /// <summary>
    /// Threads that share a tiled matmul, each dequantising its own tiles into its own slice of the scratch buffer and
    /// multiplying them with a single-threaded GEMM (<see cref="Kernels.TorchThreads"/>); null: torch's intra-op threads where
    /// the team is available. 1: the calling thread dequantises every tile and each tile's GEMM runs on torch's threads.
    /// </summary>
    internal static int? TileThreads { get; set; }

    /// <summary>
    /// Fewest output rows per tile, whatever <see cref="TileBytes"/> gives: each tile's GEMM is a single-threaded MKL
    /// sgemm, and on MKL's Intel code path (Kernels/MklCodePath, AMD CPUs) one with 128 output rows ran at 56 GFLOP/s
    /// against 88 with 256 or more (x [128, 2048], one thread; MKL's generic path 96 either way), while 1 MiB tiles of a
    /// 2048-wide weight are 128 rows (5632-wide: 46). A wide weight's tile is then larger than its share of TileBytes
    /// (2 MiB per thread at 2048, 5.5 MiB at 5632); the planner counts it (MemoryPlanner.CpuDequantTileRows). 0: bytes only.
    /// </summary>
    internal static long MinTileRows { get; set; } = PeftSharp.Memory.MemoryPlanner.CpuDequantTileRows;

    static int TeamSize => TeamFor(TileThreads);

    /// <summary>The team a <see cref="TileThreads"/> setting gives.</summary>
    internal static int TeamFor(int? tileThreads) => tileThreads is { } t ? Math.Max(1, t) : Kernels.TorchThreads.Size;

    /// <summary>
    /// Rows per tile for <paramref name="w"/>, or 0 where the whole-weight path runs: no CPU kernel, a weight of one
    /// tile, or tiling off. The <paramref name="team"/> threads split <see cref="TileBytes"/> (each tile is at most
    /// TileBytes / team, so the scratch stays one tile in all), the tile count is a multiple of the team (no thread
    /// waits for another's extra tile), and a tile starts and ends on a quantisation block (rows * in a multiple of the
    /// block size; with panel tiles, on whole 16s of rows too).
    /// </summary>
    static long TileRows(IQuantizedWeight w, ScalarType dtype, Device device, int team)
    {
        if (TileBytes <= 0 || w is not Nf4Weight nf4 || nf4.Shape.Length != 2 || !KernelPath(w, dtype, device)) return 0;
        long outF = nf4.Shape[0], inF = nf4.Shape[1], bs = nf4.Options.BlockSize;
        if (outF * inF * Nf4Kernel.ElementBytes(dtype) <= TileBytes) return 0;
        long unit = bs / (long)System.Numerics.BigInteger.GreatestCommonDivisor(inF, bs);
        // Panel tiles (Nf4PanelTile) need rows in whole 16s: MKL's panels are 16-wide runs along them.
        if (dtype == ScalarType.Float32 && Nf4PanelTile.Available) unit = unit * 16 / (long)System.Numerics.BigInteger.GreatestCommonDivisor(unit, 16);
        long most = Math.Max(unit, Math.Max(MinTileRows, TileBytes / team / (inF * Nf4Kernel.ElementBytes(dtype))) / unit * unit);
        long tiles = (outF + most - 1) / most;
        tiles = (tiles + team - 1) / team * team;
        long rows = ((outF + tiles - 1) / tiles + unit - 1) / unit * unit;
        return rows >= outF ? 0 : rows;
    }

    /// <summary>
    /// The dense weight a tile of rows at a time, each tile written by the kernel into a slice of this thread's small
    /// scratch buffer (it stays in cache) and consumed at once by <paramref name="multiply"/>(slot, first row, rows,
    /// tile): the dense weight never travels through DRAM (write then read back: 8 bytes per parameter in fp32), and
    /// the scratch holds one tile instead of the largest weight. The <paramref name="team"/> slots take tiles slot,
    /// slot + team, ... each on its own thread with its own slice, so what a slot computes never depends on timing.
    /// </summary>
    static void Tiled(Nf4Weight w, ScalarType dtype, long tileRows, int team, DequantStats.Pass pass, Action<int, long, long, Tensor> multiply,
        PanelProduct? panels = null)
    {
        long outF = w.Shape[0], inF = w.Shape[1], tiles = (outF + tileRows - 1) / tileRows, slotElems = tileRows * inF, ticks = 0;
        using var writer = w.KernelRows();
        // The plain buffer only when a tile needs it (no panel layout for its shape): panel tiles have their own pages.
        var owner = _scratch ??= new();
        Tensor? buffer = null;
        var gate = new object();
        Tensor Buffer() { lock (gate) return buffer ??= Scratch(owner, dtype, slotElems * team); }
        var slots = panels is null ? null : PanelSlots(team);
        Kernels.TorchThreads.For(team, team, slot =>
        {
            long mine = 0;
            for (long t = slot; t < tiles; t += team)
            {
                long r0 = t * tileRows, n = Math.Min(tileRows, outF - r0);
                // MKL's packed layout where it can be written (Nf4PanelTile), else a plain tile that the GEMM copies into it.
                if (slots?.Get(slot, panels!.Forward, panels.Rows, panels.Forward ? (int)n : (int)inF, panels.Forward ? (int)inF : (int)n) is { } panel)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    writer.Write(r0, panel);
                    mine += Stopwatch.GetTimestamp() - t0;
                    panels.Multiply(slot, panel, r0);
                    continue;
                }
                using var flat = Buffer().narrow(0, slot * slotElems, n * inF);
                using var tile = flat.view(n, inF);
                long start = Stopwatch.GetTimestamp();
                writer.Write(r0, tile, 1);
                mine += Stopwatch.GetTimestamp() - start;
                multiply(slot, r0, n, tile);
            }
            Interlocked.Add(ref ticks, mine);
        });
        buffer?.Dispose();
        // The kernel time of all threads over the team size: the wall time the pass spent dequantising.
        DequantStats.Add(pass, w.ElementCount, ticks / team);
    }

    /// <summary>
    /// A tiled product's GEMM on a tile dequantised into MKL's packed layout (<see cref="Nf4PanelTile"/>): the
    /// orientation, A's rows, and what a slot does with the tile whose rows start at a given row of W.
    /// </summary>
    sealed record PanelProduct(bool Forward, int Rows, Action<int, Nf4PanelTile, long> Multiply);

    [ThreadStatic] static Nf4PanelTile.Slots? _panels;

    /// <summary>This thread's panel tiles for a team of <paramref name="team"/> (rebuilt when the team changes).</summary>
    static Nf4PanelTile.Slots PanelSlots(int team)
    {
        if (_panels?.Team != team)
        {
            _panels?.Dispose();
            _panels = new Nf4PanelTile.Slots(team);
        }
        return _panels;
    }

    /// <summary>Panel tiles serve fp32 products of at least <see cref="Nf4PanelTile.MinRows"/> rows where MKL's pack API and AVX-512 or AVX2 are there.</summary>
    static bool PanelsApply(ScalarType dtype, long rows) =>
        dtype == ScalarType.Float32 && rows >= Nf4PanelTile.MinRows && rows <= int.MaxValue && Nf4PanelTile.Available;

    /// <summary>y = x W^T tile by tile: each tile's GEMM writes its columns of y in place (addmm_ into a row-strided view: no copy).</summary>
    static unsafe Tensor TiledLinear(Tensor x, Nf4Weight w, ScalarType dtype, long tileRows, int team, DequantStats.Pass pass)
    {
        using var scope = NewDisposeScope();
        long outF = w.Shape[0], inF = w.Shape[1];
        var x2 = x.reshape(-1, inF).contiguous();
        var y = empty([x2.shape[0], outF], dtype, x.device);
        long m = x2.shape[0];
        nint a = Kernels.KernelSupport.Address(x2), c = Kernels.KernelSupport.Address(y);
        var panels = PanelsApply(dtype, m)
            ? new PanelProduct(true, (int)m, (_, tile, r0) => tile.Multiply((float*)a, (int)m, (int)inF, 0f, (float*)c + r0, (int)outF))
            : null;
        Tiled(w, dtype, tileRows, team, pass, (_, r0, n, tile) =>
        {
            using var cols = y.narrow(1, r0, n);
            using var wt = tile.t();
            cols.addmm_(x2, wt, beta: 0);
        }, panels);
        return y.view([.. x.shape[..^1], outF]).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// grad_x = g W = sum over row tiles of g[:, tile] W[tile, :]: each slot accumulates its tiles in place into its
    /// own partial sum (slot 0 into grad_x), and the partials are added in slot order.
    /// </summary>
    static unsafe Tensor TiledGradInput(Tensor grad, Nf4Weight w, ScalarType dtype, long tileRows, int team)
    {
        using var scope = NewDisposeScope();
        long outF = w.Shape[0], inF = w.Shape[1];
        int slots = (int)Math.Min(team, (outF + tileRows - 1) / tileRows);
        var g2 = grad.reshape(-1, outF).contiguous();
        long m = g2.shape[0];
        var sums = Enumerable.Range(0, slots).Select(_ => empty([m, inF], dtype, grad.device)).ToArray();
        nint a = Kernels.KernelSupport.Address(g2);
        var sumAt = sums.Select(Kernels.KernelSupport.Address).ToArray();
        // A slot's first tile (one of the first `slots`) writes its sum, its later ones add to it.
        float Beta(long r0) => r0 < tileRows * slots ? 0f : 1f;
        var panels = PanelsApply(dtype, m)
            ? new PanelProduct(false, (int)m, (slot, tile, r0) => tile.Multiply((float*)a + r0, (int)m, (int)outF, Beta(r0), (float*)sumAt[slot], (int)inF))
            : null;
        Tiled(w, dtype, tileRows, slots, DequantStats.Pass.Backward, (slot, r0, n, tile) =>
        {
            using var g = g2.narrow(1, r0, n);
            sums[slot].addmm_(g, tile, beta: Beta(r0));
        }, panels);
        for (int k = 1; k < slots; k++) sums[0].PlusInPlace(sums[k]);
        return sums[0].view([.. grad.shape[..^1], inF]).MoveToOuterDisposeScope();
    }

    /// <summary>The first <paramref name="n"/> elements of this thread's scratch buffer for <paramref name="dtype"/> (grown when short).</summary>
    static Tensor Scratch(ScalarType dtype, long n) => Scratch(_scratch ??= new(), dtype, n);

    /// <summary>As <see cref="Scratch(ScalarType, long)"/> in the buffers of the thread that owns <paramref name="owner"/>.</summary>
    static Tensor Scratch(Dictionary<ScalarType, Tensor> owner, ScalarType dtype, long n)
    {
        if (!owner.TryGetValue(dtype, out var buf) || buf.numel() < n)
        {
            buf?.Dispose();
            buf = empty(n, dtype).DetachFromDisposeScope();
            owner[dtype] = buf;
        }
        return buf.narrow(0, 0, n);
    }

    /// <summary>
    /// Runs <paramref name="use"/> on the dense weight: a view of this thread's scratch where the weight can write
    /// into it (CPU), else a fresh dequantised tensor freed afterwards. <paramref name="use"/> must not keep it.
    /// </summary>
    static Tensor WithDense(IQuantizedWeight w, ScalarType dtype, Device device, DequantStats.Pass pass, Func<Tensor, Tensor> use)
    {
        if (KernelPath(w, dtype, device))
        {
            using var flat = Scratch(dtype, w.Shape.Aggregate(1L, (a, b) => a * b));
            using var view = flat.view(w.Shape);
            if (DequantInto(w, view, pass)) return use(view);
        }
        long start = Stopwatch.GetTimestamp();
        using var dense = w.Dequantize(dtype, device);
        DequantStats.Add(pass, dense.numel(), Stopwatch.GetTimestamp() - start);
        return use(dense);
    }

    static bool DequantInto(IQuantizedWeight w, Tensor view, DequantStats.Pass pass)
    {
        long start = Stopwatch.GetTimestamp();
        if (!w.DequantizeInto(view)) return false;
        DequantStats.Add(pass, view.numel(), Stopwatch.GetTimestamp() - start);
        return true;
    }

    static Tensor Compute(Tensor x, IQuantizedWeight w, ScalarType dtype, DequantStats.Pass pass)
    {
        int team = TeamSize;
        return TileRows(w, dtype, x.device, team) is > 0 and var rows
            ? TiledLinear(x, (Nf4Weight)w, dtype, rows, team, pass)
            : WithDense(w, dtype, x.device, pass, dense => nn.functional.linear(x, dense));
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var w = (IQuantizedWeight)vars[1];
        var dtype = (ScalarType)vars[2];
        ctx.save_data("w", w);
        ctx.save_data("dtype", dtype);
        // TorchSharp would build zeros for a missing grad from an output-shaped tensor that our dispose scope frees.
        ctx.set_materialize_grads(false);
        // Saved even when null: the backward looks the key up either way.
        // The pool is saved beside its entry: the backward hands the buffer back to the pool that lent it.
        var pool = w.Reuse;
        var kept = pool is not null && KernelPath(w, dtype, x.device) ? pool.Reserve(w.Shape, dtype) : null;
        ctx.save_data("kept", kept!);
        ctx.save_data("pool", pool!);
        if (kept is not null)
        {
            using var view = kept.Dense!.view(w.Shape);
            if (DequantInto(w, view, DequantStats.Pass.Forward)) return nn.functional.linear(x, view);
            if (pool!.Take(kept) is { } unused) pool.Return(unused, kept.Bytes);   // a weight without an in-place path
        }
        return Compute(x, w, dtype, DequantStats.Pass.Forward);
    }

    // The incoming gradient is disposed once used, the returned grad_x at the next custom backward (Kernels/
    // ReturnedGradients): otherwise two activation-sized tensors per quantised linear would live until the step ends.
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        Kernels.ReturnedGradients.Release();
        if (grad is null || grad.IsInvalid) return [null!, null!, null!];
        try
        {
            return [Kernels.ReturnedGradients.Keep(GradInput(ctx, grad)), null!, null!];
        }
        finally { grad.Dispose(); }
    }

    static Tensor GradInput(autograd.AutogradContext ctx, Tensor grad)
    {
        var w = (IQuantizedWeight)ctx.get_data("w");
        var dtype = (ScalarType)ctx.get_data("dtype");
        if (ctx.get_data("kept") is DequantReuse.Entry kept && ctx.get_data("pool") is DequantReuse pool && pool.Take(kept) is { } flat)
        {
            try
            {
                using var view = flat.view(w.Shape);
                DequantStats.AddReused(view.numel());
                return grad.matmul(view);
            }
            finally { pool.Return(flat, kept.Bytes); }
        }
        // fp32 only: grad_x sums over the output rows, so tiles add partial products into grad_x, which in a 16-bit dtype
        // would be rounded once per tile (the whole-weight GEMM rounds once).
        int team = TeamSize;
        if (dtype == ScalarType.Float32 && TileRows(w, dtype, grad.device, team) is > 0 and var rows)
            return TiledGradInput(grad, (Nf4Weight)w, dtype, rows, team);
        return WithDense(w, dtype, grad.device, DequantStats.Pass.Backward, dense => grad.matmul(dense));
    }
}
