using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using PeftSharp.Quantization;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>
/// NF4 dequantisation throughput against a plain copy of the same number of output bytes, single thread,
/// both into a preallocated warm destination. Ratio = dequant time / copy time (1 = as fast as memcpy).
/// </summary>
public sealed class DequantBench : IBench
{
    public string Name => "dequant";
    public string Description => "NF4 dequant (SIMD kernel, torch-ops path) vs memcpy of the output bytes (--rows --cols --reps)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        int rows = a.Int("rows", 4096), cols = a.Int("cols", 4096), reps = a.Int("reps", 15);
        set_num_threads(1);
        manual_seed(0);
        using var dense = randn(rows, cols) * 0.02;
        using var w = Nf4Weight.FromDense(dense);
        using var code = w.Code.clone();
        using var dst32 = empty(rows, cols);
        using var dst16 = empty(rows, cols, ScalarType.BFloat16);
        using var src32 = randn(rows, cols);
        using var src16 = src32.to_type(ScalarType.BFloat16);
        var codes = MemoryMarshal.Cast<byte, float>(code.bytes).ToArray();

        double Median(Action f)
        {
            f();
            var t = new List<double>();
            for (int i = 0; i < reps; i++) { var sw = Stopwatch.StartNew(); f(); t.Add(sw.Elapsed.TotalSeconds); }
            return BenchStats.Median(t);
        }
        var absmax = w.AbsmaxFloats();
        double decode = Median(() => w.AbsmaxFloats());
        double lookup32 = Median(() => Nf4Kernel.Dequantize(w.Packed.bytes, absmax, 64, codes, dst32.bytes, ScalarType.Float32));
        double kernel32 = Median(() => Nf4Kernel.Dequantize(w.Packed.bytes, w.AbsmaxFloats(), 64, codes, dst32.bytes, ScalarType.Float32));
        double copy32 = Median(() => src32.bytes.CopyTo(dst32.bytes));
        double kernel16 = Median(() => Nf4Kernel.Dequantize(w.Packed.bytes, w.AbsmaxFloats(), 64, codes, dst16.bytes, ScalarType.BFloat16));
        double copy16 = Median(() => src16.bytes.CopyTo(dst16.bytes));
        double ops32 = Median(() => { using var r = w.DequantizeOps(ScalarType.Float32); });
        double gb32 = (double)rows * cols * 4 / 1e9;
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            rows, cols, threads = 1, avx2 = System.Runtime.Intrinsics.X86.Avx2.IsSupported,
            kernel_fp32_gbps = Math.Round(gb32 / kernel32, 2), memcpy_fp32_gbps = Math.Round(gb32 / copy32, 2),
            kernel_bf16_gbps = Math.Round(gb32 / 2 / kernel16, 2), memcpy_bf16_gbps = Math.Round(gb32 / 2 / copy16, 2),
            torch_ops_fp32_gbps = Math.Round(gb32 / ops32, 2),
            // Per weight of the dequantisation: the double-quantised absmax decode and the NF4 lookup alone (fp32).
            absmax_decode_ns_per_param = Math.Round(decode / rows / cols * 1e9, 3), lookup_fp32_ns_per_param = Math.Round(lookup32 / rows / cols * 1e9, 3),
        }));
        Console.WriteLine($"dequant/memcpy time ratio: fp32 {kernel32 / copy32:F2}x, bf16 {kernel16 / copy16:F2}x (<= 2 is the aim); torch-ops path {ops32 / copy32:F2}x");
        return 0;
    }
}
