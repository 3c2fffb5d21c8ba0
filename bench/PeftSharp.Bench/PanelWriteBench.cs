using System.Diagnostics;
using PeftSharp.Quantization;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// panel-write: ns per value of dequantising an NF4 tile into MKL's packed layout (Nf4PanelTile) against the plain
/// kernel into a row-major buffer, one thread, each orientation, with one buffer written again and again (warm) and
/// with several tiles' buffers in turn (what a layer's shapes do), to see what the destination's cache state costs.
/// </summary>
public sealed class PanelWriteBench : IBench
{
    public string Name => "panel-write";
    public string Description => "NF4 tile dequantised into MKL's packed layout vs a plain buffer, warm and cycling (--rows 256 --cols 1024 --buffers 8)";

    public unsafe int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int rows = a.Int("rows", 256), cols = a.Int("cols", 1024), buffers = a.Int("buffers", 8), reps = a.Int("reps", 200);
        // --weight-tiles T: the weight holds T tiles and the calls take them in turn, so the codes come from memory as in a step.
        int wt = a.Int("weight-tiles", 1);
        set_num_threads(1);
        manual_seed(0);
        using var w = Nf4Weight.FromDense(randn((long)rows * wt, cols) * 0.02);
        int turn = 0;
        long Next() => (long)(turn++ % wt) * rows;
        using var plain = empty(rows, cols);
        Console.WriteLine($"cpu: {BenchCpu.Describe()}; tile [{rows}, {cols}] of a weight of {wt} tiles taken in turn, {reps} reps, cycling over {buffers} buffers");
        double Ns(Action f)
        {
            f();
            var t = new List<double>();
            for (int i = 0; i < 5; i++)
            {
                var sw = Stopwatch.StartNew();
                for (int r = 0; r < reps; r++) f();
                t.Add(sw.Elapsed.TotalSeconds / reps);
            }
            return BenchStats.Median(t) * 1e9 / ((long)rows * cols);
        }
        using var writer = w.KernelRows();
        Console.WriteLine($"  plain row-major buffer (Nf4Kernel), warm: {Ns(() => writer.Write(Next(), plain, 1)):F3} ns/value");
        foreach (bool forward in new[] { true, false })
        {
            var tiles = Enumerable.Range(0, buffers).Select(_ => forward ? Nf4PanelTile.Learn(true, 128, rows, cols) : Nf4PanelTile.Learn(false, 128, cols, rows)).ToArray();
            if (tiles[0] is null) { Console.WriteLine($"  {(forward ? "forward" : "backward")}: no panel layout for this shape"); continue; }
            int next = 0;
            double warm = Ns(() => writer.Write(Next(), tiles[0]!));
            double cycling = Ns(() => writer.Write(Next(), tiles[next++ % buffers]!));
            // The same shapes on one memory file (Nf4PanelTile.SharedPages): a tile that takes the pages over zeroes its padding first.
            using var pages = Nf4PanelTile.SharedPages.Create();
            var shared = Enumerable.Range(0, buffers).Select(_ => forward ? Nf4PanelTile.Learn(true, 128, rows, cols, pages) : Nf4PanelTile.Learn(false, 128, cols, rows, pages)).ToArray();
            double sharedCycling = Ns(() => writer.Write(Next(), shared[next++ % buffers]!));
            Console.WriteLine($"  {(forward ? "forward (transposed)" : "backward (rows)"),-22} panels: warm {warm:F3} ns/value, cycling {buffers} buffers {cycling:F3}, " +
                              $"cycling {buffers} tiles on shared pages {sharedCycling:F3}");
            foreach (var t in tiles.Concat(shared)) t?.Dispose();
        }
        return 0;
    }
}
