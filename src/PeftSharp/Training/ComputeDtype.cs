using System.Diagnostics;
using System.Text.Json.Nodes;
using PeftSharp.IO;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>The compute dtype `train --compute-dtype` resolved to, and why (printed, and kept in the run's options);
/// <paramref name="Warning"/>: a 16-bit dtype asked for on a CPU that has no instructions for it (printed as a warning).</summary>
internal sealed record ComputeDtypeChoice(ScalarType Dtype, string Reason, string? Warning = null)
{
    /// <summary>fp32 | bf16 | fp16: the name the run records (so a resume keeps the dtype, not "auto").</summary>
    public string Name => ComputeDtype.Name(Dtype);
}

/// <summary>
/// Mixed precision as PEFT trains it with <c>autocast_adapter_dtype=True</c>: the frozen base and the activations in a
/// 16-bit dtype, the adapter weights, their gradients and the optimiser state in fp32 (while training LoraLayer
/// multiplies with 16-bit copies of them, as torch.autocast does), RMSNorm, each position's logit for its target
/// (CausalLM.MixedPrecisionTraining, NextTokenLogits) and the loss in fp32. Only the LoRA family trains this way: full
/// fine-tuning would need fp32 master weights, and Houlsby adapters and prompt embeddings are built in the model dtype,
/// so those methods train in fp32 and refuse an explicit 16-bit dtype.
/// <c>auto</c> picks bf16 where this machine multiplies bf16 faster than fp32 (a 256^3 matmul each way, measured once
/// per CPU model, thread count and TorchSharp version, cached in the user cache folder), fp32 otherwise.
/// </summary>
internal static class ComputeDtype
{
    public const string Auto = "auto";
    public static readonly string[] Names = [Auto, "fp32", "bf16", "fp16"];

    /// <summary>bf16 must beat fp32 by this much for auto to take it: below, the casts around the fp32 parts eat the gain.</summary>
    public const double AutoMinSpeedup = 1.2;

    /// <summary>True when a 16-bit compute dtype is supported for <paramref name="method"/> (the LoRA family).</summary>
    public static bool Supports(string method) => Methods.MethodOptions.IsLoraMethod(method);

    /// <summary>fp32 | bf16 | fp16 (and their long names); null for auto. An unknown name is an error naming <paramref name="flag"/>.</summary>
    public static ScalarType? Parse(string text, string flag = "--compute-dtype") => text.Trim().ToLowerInvariant() switch
    {
        Auto => null,
        "fp32" or "float32" or "f32" => ScalarType.Float32,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        "fp16" or "float16" or "f16" or "half" => ScalarType.Float16,
        _ => throw new ArgumentException($"{flag}: '{text}' is not auto, fp32, bf16 or fp16"),
    };

    public static string Name(ScalarType t) => t switch
    {
        ScalarType.Float32 => "fp32",
        ScalarType.BFloat16 => "bf16",
        ScalarType.Float16 => "fp16",
        _ => throw new ArgumentException($"{t} is not a compute dtype (fp32, bf16, fp16)"),
    };

    /// <summary>An explicit 16-bit dtype for a method that trains its own weights in the model dtype: one clear error.</summary>
    public static void Check(string requested, string method)
    {
        if (Parse(requested) is { } t && t != ScalarType.Float32 && !Supports(method))
            throw new ArgumentException($"--compute-dtype {requested}: mixed precision covers lora, dora, qlora and qdora (fp32 adapters on a " +
                $"16-bit base); --method {method} {Why(method)}; use --compute-dtype fp32 or auto");
    }

    static string Why(string method) => method switch
    {
        "full" => "trains the base weights themselves, which would need fp32 master copies",
        "adapter" => "builds its bottleneck adapters in the model dtype",
        "prompt" => "builds its prompt embeddings in the model dtype",
        _ => "loads its adapters in the model dtype",
    };

    /// <summary>
    /// The decision, given what was asked, the method, the device and (for auto on a CPU) the measured bf16/fp32 matmul
    /// speed. <paramref name="probe"/> is only called when the decision needs it.
    /// </summary>
    public static ComputeDtypeChoice Decide(string requested, string method, bool cuda, Func<MatmulProbe> probe,
        Func<IReadOnlyCollection<string>?>? cpuFlags = null)
    {
        Check(requested, method);
        if (Parse(requested) is { } explicitDtype)
            return new(explicitDtype, "as given", cuda ? null : EmulatedOnCpu(explicitDtype, (cpuFlags ?? MatmulProbe.CpuFlags)()));
        if (!Supports(method)) return new(ScalarType.Float32, $"auto: --method {method} trains in fp32 (mixed precision covers the LoRA family)");
        if (cuda) return new(ScalarType.BFloat16, "auto: bf16 is the norm on CUDA");
        var p = probe();
        return p.Speedup >= AutoMinSpeedup
            ? new(ScalarType.BFloat16, $"auto: {p}, at least {AutoMinSpeedup}x")
            : new(ScalarType.Float32, $"auto: {p}, under {AutoMinSpeedup}x");
    }

    /// <summary>x86 flags that give libtorch (oneDNN) native kernels for each 16-bit dtype.</summary>
    static readonly Dictionary<ScalarType, string[]> NativeFlags = new()
    {
        [ScalarType.BFloat16] = ["avx512_bf16", "amx_bf16", "avx_ne_convert"],
        [ScalarType.Float16] = ["avx512_fp16", "amx_fp16", "avx_ne_convert"],
    };

    /// <summary>
    /// The warning for an explicit 16-bit dtype on a CPU whose flags hold none of the instructions oneDNN computes that
    /// dtype with: its matmuls are then emulated (on an AVX2-only AMD EPYC, bf16 and fp16 QLoRA demo steps ran at 160
    /// tokens/s vs fp32's 3,300: 20x slower) while auto would have measured and picked fp32. Null where the flags are
    /// unknown (<paramref name="flags"/> null: not x86 Linux) or one of them is there.
    /// </summary>
    public static string? EmulatedOnCpu(ScalarType dtype, IReadOnlyCollection<string>? flags)
    {
        if (flags is null || !NativeFlags.TryGetValue(dtype, out var native) || native.Any(flags.Contains)) return null;
        return $"this CPU has no {Name(dtype)} instructions ({string.Join(", ", native)} absent), so libtorch emulates {Name(dtype)} " +
               $"matmuls: steps can be many times slower than fp32 (--compute-dtype auto measures both and picks)";
    }

    /// <summary><see cref="Decide"/> with the cached (or, the first time on this machine, measured) matmul probe.</summary>
    public static ComputeDtypeChoice Resolve(string requested, string method, string device) =>
        Decide(requested, method, Memory.PlanNames.Device(device) == Memory.DeviceKind.Cuda, () => MatmulProbe.Cached());
}

/// <summary>GFLOP/s of a square matmul in fp32 and in bf16 on this machine's current thread setting.</summary>
internal sealed record MatmulProbe(double Fp32Gflops, double Bf16Gflops, string Machine, bool FromCache)
{
    public const int Size = 256;
    public double Speedup => Bf16Gflops / Fp32Gflops;

    public override string ToString() =>
        $"a {Size}^3 bf16 matmul runs {Speedup:F2}x fp32's speed ({Bf16Gflops:G3} vs {Fp32Gflops:G3} GFLOP/s{(FromCache ? ", cached" : "")}) on {Machine}";

    /// <summary>
    /// CPU model, its bf16 instruction flags, thread count, TorchSharp version and any oneDNN/ATen ISA cap in the
    /// environment: the things the ratio depends on. The flags are in the key because one CPU model name covers machines
    /// with and without AVX512_BF16 (a hypervisor can mask them; issue 17 saw bf16 several times slower on such a box), and
    /// the ISA caps because they switch the bf16 kernels off. A machine whose key changes measures again; old entries stay.
    /// </summary>
    public static string MachineKey()
    {
        var flags = Bf16Flags();
        string isa = string.Concat(IsaCaps.Select(v => Environment.GetEnvironmentVariable(v) is { Length: > 0 } x ? $", {v}={x}" : ""));
        return $"{CpuModel()} [{(flags.Count > 0 ? string.Join(' ', flags) : "no bf16 flags")}], {get_num_threads()} threads, " +
               $"TorchSharp {typeof(TorchSharp.torch).Assembly.GetName().Version}{isa}{(Kernels.MklCodePath.Applied ? ", MKL Intel path" : "")}";
    }

    /// <summary>Environment variables that cap the instruction set libtorch's CPU kernels use.</summary>
    static readonly string[] IsaCaps = ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"];

    /// <summary>Alternates fp32 and bf16 rounds (load drift hits both alike) and keeps each side's median.</summary>
    public static MatmulProbe Measure(int rounds = 7, int perRound = 8)
    {
        Kernels.MklCodePath.Ensure();   // the fp32 side measures the code path the run will use
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var a = randn(Size, Size);
        var b = randn(Size, Size);
        var a16 = a.to_type(ScalarType.BFloat16);
        var b16 = b.to_type(ScalarType.BFloat16);
        double Time(Tensor x, Tensor y)
        {
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < perRound; i++) x.matmul(y).Dispose();
            return sw.Elapsed.TotalSeconds / perRound;
        }
        Time(a, b); Time(a16, b16);   // warm-up: thread pool, packing buffers
        var t32 = new List<double>();
        var t16 = new List<double>();
        for (int r = 0; r < rounds; r++) { t32.Add(Time(a, b)); t16.Add(Time(a16, b16)); }
        double flop = 2.0 * Size * Size * Size;
        return new(flop / Median(t32) / 1e9, flop / Median(t16) / 1e9, MachineKey(), FromCache: false);
    }

    /// <summary>The measurement for this machine from the cache file, or a fresh one (then written there unless
    /// <paramref name="busy"/> says other processes held the cores: such a figure decides this run only, and the next
    /// run measures again; default <see cref="BoxIsBusy"/>).</summary>
    public static MatmulProbe Cached(string? cacheFile = null, Func<bool>? busy = null)
    {
        cacheFile ??= DefaultCacheFile();
        string key = MachineKey();
        JsonObject cache;
        try { cache = File.Exists(cacheFile) ? JsonFile.ReadObject(cacheFile) : new JsonObject(); }
        catch (InvalidDataException) { cache = new JsonObject(); }   // a damaged cache is only a lost measurement
        if (cache[key] is JsonObject hit && hit["fp32_gflops"]?.GetValue<double>() is double f && hit["bf16_gflops"]?.GetValue<double>() is double h && f > 0 && h > 0)
            return new(f, h, key, FromCache: true);
        var p = Measure();
        if ((busy ?? BoxIsBusy)()) return p;
        cache[key] = new JsonObject { ["fp32_gflops"] = Math.Round(p.Fp32Gflops, 1), ["bf16_gflops"] = Math.Round(p.Bf16Gflops, 1), ["measured_utc"] = DateTime.UtcNow.ToString("u") };
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(cacheFile)!);
            AtomicFile.WriteAllText(cacheFile, cache.ToJsonString(new() { WriteIndented = true }));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }   // read-only home: measure again next time
        return p;
    }

    /// <summary>The 1-minute load average exceeds the cores (Linux /proc/loadavg; false where it cannot be read): a probe
    /// taken then measured the neighbours as much as the CPU (one cached on a box at load 50 read 0.4 GFLOP/s fp32).</summary>
    public static bool BoxIsBusy()
    {
        try
        {
            string first = File.ReadAllText("/proc/loadavg").Split(' ')[0];
            return double.TryParse(first, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double load)
                && load > Environment.ProcessorCount;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>$XDG_CACHE_HOME/peftsharp (else ~/.cache/peftsharp)/matmul-probe.json.</summary>
    public static string DefaultCacheFile()
    {
        string root = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x ? x
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "peftsharp", "matmul-probe.json");
    }

    /// <summary>"model name" of /proc/cpuinfo (Linux), else the OS's processor description.</summary>
    public static string CpuModel()
    {
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                    if (line.StartsWith("model name", StringComparison.Ordinal)) return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        return $"{System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture} CPU";
    }

    /// <summary>The CPU's bf16-related instruction flags (avx512_bf16, amx_bf16, amx_tile), empty where there are none or no /proc/cpuinfo.</summary>
    public static IReadOnlyList<string> Bf16Flags() =>
        (CpuFlags() ?? []).Where(f => f is "avx512_bf16" or "amx_bf16" or "amx_tile" or "avx512f").ToList();

    /// <summary>Every instruction flag of an x86 CPU's /proc/cpuinfo (Linux); null where that line is not there (other
    /// OSes; arm64 spells its features another way) or cannot be read.</summary>
    public static IReadOnlyCollection<string>? CpuFlags()
    {
        try
        {
            if (!File.Exists("/proc/cpuinfo")) return null;
            var flags = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal));
            return flags is null ? null : flags[(flags.IndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    static double Median(List<double> xs)
    {
        var s = xs.Order().ToList();
        return s[s.Count / 2];
    }
}
