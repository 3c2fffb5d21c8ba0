using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// qlora-step: a QLoRA training step (NF4 base, fp32 LoRA) against a LoRA step on the fp32 base of the same shape:
/// step time (both models in one process, steps alternated so drift hits both) and peak memory of each, measured
/// in a separate child process per base (VmHWM; the fp32 model never exists in the NF4 child) and as tensor bytes.
/// Options: peer_lora_step.py's shape flags, --targets all-linear (default) or a list, --rounds 5 --warmup 2 --threads 2;
/// --no-memory skips the child processes (the ~1B case: its fp32 child alone would hold another 4+ GB); --checkpointing
/// (both models; it keeps one layer's dequantised weights for the backward) and --reuse-layers N|all (that budget
/// without checkpointing), --dequant-threads N (the NF4 kernel's threads on whole weights; default torch's), --tile-kib N (dense bytes per dequantisation
/// tile, 0: whole weights), --allocator train|glibc (the timed steps on `peft train`'s buffer cache, the default, or glibc's heap), --tile-threads N (threads sharing a tiled matmul; default torch's), --compare-tile-kib M[,M2..], --compare-tile-threads N[,N2..] and/or --compare-min-tile-rows R[,R2..], --compare-panels off[,on..] (more columns: the NF4 model with tile M / team N / a floor of R rows per tile / tiles dequantised into plain buffers rather than MKL's packed layout). Prints how many weights each step dequantises, in which pass, at how many ns/param.
/// </summary>
public sealed class QloraStepBench : IBench
{
    public string Name => "qlora-step";
    public string Description => "QLoRA (NF4 base) step time and peak memory vs LoRA on the fp32 base (--targets all-linear --rounds 5)";

    sealed record Shape(ModelConfig Config, int Batch, int Seq, int R, double Alpha, string[] Targets);

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int threads = a.Int("threads", 2);
        set_num_threads(threads);
        var shape = new Shape(
            BenchModels.Config(a.Int("vocab", 4096), a.Int("hidden", 512), a.Int("layers", 4), a.Int("heads", 8), a.Int("kv-heads", 8), a.Int("intermediate", 0)),
            a.Int("batch", 4), a.Int("seq", 256), a.Int("r", 8), a.Double("alpha", 16), a.Get("targets", "all-linear").Split(','));
        int warmup = a.Int("warmup", 2);
        // --tile-kib N: the NF4 step's dequantisation tile (0: the whole weight per matmul); --compare-tile-kib M adds a
        // third column, the same NF4 model with tile M, alternated with the other two (e.g. 0 to see what tiling gains).
        long tileBytes = a.Int("tile-kib", (int)(QuantizedLinearFunction.TileBytes / 1024)) * 1024L;
        if (a.Get("tile-threads", "") is { Length: > 0 } tt) QuantizedLinearFunction.TileThreads = int.Parse(tt);
        QuantizedLinearFunction.TileBytes = tileBytes;
        if (a.Get("only", "") is { Length: > 0 } only) return Child(a, shape, only == "nf4", warmup + a.Int("rounds", 5));
        // The timed steps run on `peft train`'s allocator (the buffer cache; --allocator glibc: glibc's heap, as this
        // bench ran before 2026-12-02); the memory children keep glibc's malloc with and without a fixed threshold.
        string allocator = BenchAllocator.Apply(a);

        manual_seed(0);
        using var ids = randint(0, shape.Config.VocabSize, [shape.Batch, shape.Seq + 1]);
        using var dense = BenchModels.Random(shape.Config);
        using var nf4 = BenchModels.RandomNf4(shape.Config);
        if (a.Get("dequant-threads", "") is { Length: > 0 } dt) Nf4Kernel.MaxThreads = int.Parse(dt);
        bool checkpointing = a.Flag("checkpointing");
        if (checkpointing) { GradientCheckpointing.Enable(dense); GradientCheckpointing.Enable(nf4); }
        // --reuse-layers N: keep N decoder layers' dequantised weights for the backward (checkpointing sets 1).
        if (a.Get("reuse-layers", "") is { Length: > 0 } keep) DequantReuse.KeepLayers(nf4, keep == "all" ? shape.Config.NumLayers : int.Parse(keep));
        // --compare-tile-kib M[,M2...] and --compare-tile-threads N[,N2...]: more NF4 columns (the same model with tile M and
        // team N; a missing one takes the NF4 column's), alternated with the others (e.g. tile 0: what tiling gains).
        var kibs = (a.Get("compare-tile-kib", "") is { Length: > 0 } ck ? ck.Split(',').Select(k => long.Parse(k) * 1024) : []).ToList();
        var teamList = (a.Get("compare-tile-threads", "") is { Length: > 0 } cn ? cn.Split(',').Select(n => (int?)int.Parse(n)) : []).ToList();
        // --compare-min-tile-rows R[,R2...]: columns with another floor on a tile's rows (0: TileBytes alone decides).
        var rowList = (a.Get("compare-min-tile-rows", "") is { Length: > 0 } cr ? cr.Split(',').Select(long.Parse) : []).ToList();
        // --compare-panels off[,on...]: columns with NF4 tiles dequantised into plain buffers (each GEMM packs them) instead of MKL's packed layout.
        var panelList = (a.Get("compare-panels", "") is { Length: > 0 } cp ? cp.Split(',').Select(v => v == "on") : []).ToList();
        int extra = new[] { kibs.Count, teamList.Count, rowList.Count, panelList.Count }.Max();
        long minRows = QuantizedLinearFunction.MinTileRows;
        var rowFloors = new[] { minRows, minRows }.Concat(Enumerable.Range(0, extra).Select(k => k < rowList.Count ? rowList[k] : minRows)).ToArray();
        var tiles = new[] { tileBytes, tileBytes }.Concat(Enumerable.Range(0, extra).Select(k => k < kibs.Count ? kibs[k] : tileBytes)).ToArray();
        var panels = new[] { true, true }.Concat(Enumerable.Range(0, extra).Select(k => k >= panelList.Count || panelList[k])).ToArray();
        var teams = new[] { QuantizedLinearFunction.TileThreads, QuantizedLinearFunction.TileThreads }
            .Concat(Enumerable.Range(0, extra).Select(k => k < teamList.Count ? teamList[k] : QuantizedLinearFunction.TileThreads)).ToArray();
        using var denseStep = new LoraStep(dense, shape.R, shape.Alpha, shape.Targets, ids);
        using var nf4Step = new LoraStep(nf4, shape.R, shape.Alpha, shape.Targets, ids);
        PeftSharp.Native.TensorAllocator.StartSteps();   // the buffer cache's cap follows the steps (the Trainer also restarts it after its first step; LoRA's state is too small to matter)
        // The last column: the fp32 base with its weights left plain (the trainers' --pack-weights off), when they are packed.
        bool plainColumn = denseStep.Packing.StartsWith("frozen weights packed");
        var steps = new[] { denseStep }.Concat(Enumerable.Repeat(nf4Step, 1 + extra)).Concat(plainColumn ? [denseStep] : []).ToArray();
        var times = steps.Select(_ => new List<double>()).ToArray();
        // Process CPU time per step beside wall time: on a shared box wall time mostly measures the other processes.
        var cpu = steps.Select(_ => new List<double>()).ToArray();
        using var self = Process.GetCurrentProcess();
        var dequant = new DequantStats.Snapshot[steps.Length];
        int rounds = a.Int("rounds", 5);
        for (int i = 0; i < warmup + rounds; i++)
            for (int k = 0; k < steps.Length; k++)
            {
                int c = Math.Min(k, tiles.Length - 1);   // the plain fp32 column has no tile settings of its own
                QuantizedLinearFunction.TileBytes = tiles[c];
                QuantizedLinearFunction.TileThreads = teams[c];
                QuantizedLinearFunction.MinTileRows = rowFloors[c];
                Nf4PanelTile.Enabled = panels[c];
                var before = DequantStats.Read();
                self.Refresh();
                var cpu0 = self.TotalProcessorTime;
                var sw = Stopwatch.StartNew();
                using (plainColumn && k == steps.Length - 1 ? PeftSharp.Kernels.PackedLinear.Off() : null) steps[k].Run();
                if (i < warmup) continue;
                times[k].Add(sw.Elapsed.TotalSeconds);
                self.Refresh();
                cpu[k].Add((self.TotalProcessorTime - cpu0).TotalSeconds);
                dequant[k] += DequantStats.Read() - before;
            }
        double tDense = BenchStats.Median(times[0]), tNf4 = BenchStats.Median(times[1]);
        var ratios = times[1].Zip(times[0], (q, d) => q / d).ToList();
        Console.WriteLine($"cpu: {BenchCpu.Describe()}; NF4 kernel: {Nf4Kernel.Isa}; allocator: {allocator}");
        Console.WriteLine($"model {dense.ParameterCount() / 1e6:F1}M params ({shape.Config.NumLayers} layers, h {shape.Config.HiddenSize}, vocab {shape.Config.VocabSize}), " +
                          $"batch {shape.Batch}x{shape.Seq}, LoRA r={shape.R} on {string.Join(",", shape.Targets)} ({denseStep.Adapter.ParameterCount:N0} params), {threads} threads " +
                          $"(dequantisation: {Nf4Kernel.MaxThreads?.ToString() ?? "as many"}), {rounds} alternated rounds" +
                          (checkpointing ? ", gradient checkpointing on both" : "") +
                          $"; dequantised weights kept for backward: {DequantReuse.BudgetOf(nf4) / 1048576.0:F0} MiB budget ({(double)DequantReuse.BudgetOf(nf4) / Math.Max(1, DequantReuse.LayerBytes(nf4, ScalarType.Float32)):F1} layers)");
        Console.WriteLine($"step time: fp32 base median {tDense * 1e3:F0} ms (min {times[0].Min() * 1e3:F0}), NF4 base median {tNf4 * 1e3:F0} ms (min {times[1].Min() * 1e3:F0})");
        Console.WriteLine($"QLoRA/LoRA step time ratio = {BenchStats.Median(ratios):F3} (median of per-round ratios; min/min {times[1].Min() / times[0].Min():F3}); " +
                          $"dequantisation tile {Tile(tileBytes, teams[1])}, at least {rowFloors[1]} rows{(Nf4PanelTile.Supported ? $", tiles written in MKL's packed layout (Nf4PanelTile, {Nf4PanelTile.Isa})" : ", tiles in plain buffers (no MKL pack API or AVX2 here)")}");
        Console.WriteLine($"fp32 base: {denseStep.Packing}");
        if (plainColumn)
        {
            var plain = times[^1];
            Console.WriteLine($"  plain fp32 weights (--pack-weights off), alternated with the rest: median {BenchStats.Median(plain) * 1e3:F0} ms; packed/plain step time " +
                              $"{BenchStats.Median(times[0].Zip(plain, (p, q) => p / q).ToList()):F3}; QLoRA/LoRA against the plain fp32 step = {BenchStats.Median(times[1].Zip(plain, (q, d) => q / d).ToList()):F3} " +
                              "(an NF4 weight is dequantised at every call, so MKL packs its tiles anyway: packing is an fp32 lever)");
        }
        for (int k = 2; k < steps.Length - (plainColumn ? 1 : 0); k++)
            Console.WriteLine($"  compare: NF4 base with dequantisation tile {Tile(tiles[k], teams[k])}, at least {rowFloors[k]} rows{(panels[k] ? "" : ", tiles in plain buffers (panels off)")}, median {BenchStats.Median(times[k]) * 1e3:F0} ms, QLoRA/LoRA ratio " +
                              $"{BenchStats.Median(times[k].Zip(times[0], (q, d) => q / d).ToList()):F3}; NF4 column / this one = {BenchStats.Median(times[1].Zip(times[k], (q, d) => q / d).ToList()):F3}; " +
                              $"dequantisation {dequant[k].Seconds / rounds * 1e3:F0} ms/step");
        Console.WriteLine($"process CPU time per step (all threads): fp32 base median {BenchStats.Median(cpu[0]) * 1e3:F0} ms, NF4 base {BenchStats.Median(cpu[1]) * 1e3:F0} ms, " +
                          $"ratio {BenchStats.Median(cpu[1].Zip(cpu[0], (q, d) => q / d).ToList()):F3} (less sensitive to other processes than wall time; spinning threads count)");
        PrintBreakdown(dequant[1], rounds, tDense, tNf4);

        if (a.Flag("no-memory")) return 0;
        // glibc raises its mmap threshold after freeing large blocks, so the NF4 step's transient dequantised weights
        // stay in the heap; a fixed threshold returns them to the OS. Both are reported.
        foreach (var threshold in new string?[] { null, "1048576" })
        {
            Console.WriteLine($"peak memory, one child process per base, glibc {(threshold is null ? "default malloc" : $"MALLOC_MMAP_THRESHOLD_={threshold}")} " +
                              "(VmHWM; tensor bytes of base + adapter + AdamW state):");
            var results = new[] { ("fp32", RunChild(argv, "fp32", threshold)), ("nf4", RunChild(argv, "nf4", threshold)) };
            foreach (var (name, j) in results)
                Console.WriteLine($"  {name,-5} VmHWM {Mb(j["peak_rss"]!),8:F1} MiB (runtime {Mb(j["rss_before_model"]!),6:F1}, + model {Mb(j["rss_after_model"]!) - Mb(j["rss_before_model"]!),6:F1}, " +
                                  $"+ step peak {Mb(j["peak_rss"]!) - Mb(j["rss_after_model"]!),6:F1} MiB); tensors: base {Mb(j["base_bytes"]!),7:F1} MiB, " +
                                  $"adapter {Mb(j["adapter_bytes"]!),5:F2} MiB, AdamW state {Mb(j["optimizer_bytes"]!),5:F2} MiB");
            double Peak(JsonNode j) => Mb(j["peak_rss"]!) - Mb(j["rss_before_model"]!);
            Console.WriteLine($"  QLoRA/LoRA peak memory ratio = {Peak(results[1].Item2) / Peak(results[0].Item2):F3} (VmHWM above the runtime), " +
                              $"base tensor bytes ratio = {(double)results[1].Item2["base_bytes"]! / (double)results[0].Item2["base_bytes"]!:F3}");
        }
        return 0;
    }

    /// <summary>Where the QLoRA step's extra time goes: dequantisations per step by pass, their speed, their share of the LoRA step.</summary>
    static void PrintBreakdown(DequantStats.Snapshot d, int rounds, double tDense, double tNf4)
    {
        double perStep = d.Seconds / rounds;
        Console.WriteLine($"dequantisation per NF4 step: forward {d.ForwardCalls / rounds} weights ({d.ForwardWeights / rounds / 1e6:F1}M params, {d.ForwardSeconds / rounds * 1e3:F0} ms), " +
                          $"backward {d.BackwardCalls / rounds} ({d.BackwardWeights / rounds / 1e6:F1}M, {d.BackwardSeconds / rounds * 1e3:F0} ms), reused from forward {d.ReusedCalls / rounds} ({d.ReusedWeights / rounds / 1e6:F1}M); " +
                          $"{(d.Weights > 0 ? d.Seconds / d.Weights * 1e9 : 0):F2} ns/param (NF4 lookup + write; tiled on a team: the threads' kernel time over the team size, the wall time it adds)");
        Console.WriteLine($"  = {perStep * 1e3:F0} ms/step = {perStep / tDense:P1} of the fp32 LoRA step; the rest of the gap (matmuls on the dequantised weight vs the fp32 base's, " +
                          $"allocations; below 0 where tiles keep the weight in cache and the GEMMs read 0.5 B/param of codes from DRAM instead of 4) {(tNf4 - tDense - perStep) / tDense:P1}; ratio without any dequantisation would be {(tNf4 - perStep) / tDense:F3}");
    }

    static string Tile(long bytes, int? team)
    {
        int n = QuantizedLinearFunction.TeamFor(team);
        return bytes <= 0 ? "off (whole weight)" : $"{bytes / 1024} KiB ({n} thread(s){(n > 1 ? ", each its own tiles on torch's OpenMP team" : "")})";
    }

    static double Mb(JsonNode n) => (double)n / (1 << 20);

    /// <summary>Child: builds one base, runs the steps, prints its memory as JSON.</summary>
    static int Child(BenchArgs a, Shape shape, bool nf4, int steps)
    {
        var (before, _) = ProcessMemory.Read();
        manual_seed(0);
        using var ids = randint(0, shape.Config.VocabSize, [shape.Batch, shape.Seq + 1]);
        using var model = nf4 ? BenchModels.RandomNf4(shape.Config) : BenchModels.Random(shape.Config);
        using var step = new LoraStep(model, shape.R, shape.Alpha, shape.Targets, ids);
        var (afterModel, _) = ProcessMemory.Read();
        // --perf-window W: after W warm-up steps, the rest's window on CLOCK_MONOTONIC for bench/qlora-step-perf.sh.
        int window = a.Int("perf-window", -1);
        long t0 = 0;
        for (int i = 0; i < steps; i++)
        {
            if (i == window) t0 = Stopwatch.GetTimestamp();
            step.Run();
        }
        if (window >= 0 && Stopwatch.Frequency == 1_000_000_000)
            Console.Error.WriteLine($"perf window: {t0 / 1e9:F6} {Stopwatch.GetTimestamp() / 1e9:F6} steps {steps - window}");
        var (_, peak) = ProcessMemory.Read();
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            @base = nf4 ? "nf4" : "fp32", rss_before_model = before, rss_after_model = afterModel, peak_rss = peak, base_bytes = BenchModels.BaseBytes(model),
            adapter_bytes = step.Adapter.ParameterCount * 4, optimizer_bytes = step.OptimizerStateBytes,
        }));
        return 0;
    }

    static JsonNode RunChild(string[] argv, string only, string? mmapThreshold)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
        if (mmapThreshold is not null) psi.Environment["MALLOC_MMAP_THRESHOLD_"] = mmapThreshold;
        // Started as `dotnet PeftSharp.Bench.dll` (the host runs it): the child needs the dll too. Started through the
        // apphost (`dotnet run`, ./PeftSharp.Bench) it must not get it: the dll path would be read as the bench name.
        // (GetFileNameWithoutExtension("PeftSharp.Bench") is "PeftSharp", so the host is recognised by its own name.)
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!).Equals("dotnet", StringComparison.Ordinal))
            psi.ArgumentList.Add(typeof(QloraStepBench).Assembly.Location);
        psi.ArgumentList.Add("qlora-step");
        foreach (var s in argv) psi.ArgumentList.Add(s);
        psi.ArgumentList.Add("--only");
        psi.ArgumentList.Add(only);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"qlora-step child ({only}) exited with {p.ExitCode}");
        return JsonNode.Parse(output.Trim().Split('\n')[^1])!;
    }
}
