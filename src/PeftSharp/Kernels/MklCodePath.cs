using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace PeftSharp.Kernels;

/// <summary>
/// Lets the MKL inside libtorch run its Intel code path on AMD CPUs. libtorch's fp32 CPU matmuls are MKL's sgemm, which
/// asks <c>mkl_serv_intel_cpu_true</c> which kernels to use and, on any CPU that is not GenuineIntel, picks a generic
/// path: on this project's AMD EPYC (Zen 4, AVX-512) a 2048^3 fp32 matmul on 2 threads ran at 175 GFLOP/s, and at 215
/// with that function answering 1 (the LoRA training step 1.12-1.17x faster). The kernels MKL then picks are chosen by the
/// CPU's instruction-set flags (cpuid), which an AMD CPU reports truthfully, so only the vendor test is skipped: the same
/// effect as the LD_PRELOAD shim people use with numpy/PyTorch on AMD, done in process by rewriting the function's first
/// bytes to "return 1". bf16 matmuls (oneDNN) are not affected.
/// MKL caches its answer at its first GEMM, so this must run before the process's first matmul: CausalLM's constructor,
/// the CLI's thread setup and the compute-dtype probe call <see cref="Ensure"/>; a process that multiplied before keeps
/// MKL's generic path (results are correct either way, only the speed differs). Linux x64 with libtorch's bundled MKL
/// on an AMD CPU only; <c>PEFTSHARP_MKL_INTEL_PATH=0</c> leaves MKL's own choice (the benches' stock comparison).
/// </summary>
internal static unsafe partial class MklCodePath
{
    /// <summary>Set to 0 to leave MKL's own code-path choice alone.</summary>
    public const string EnvironmentVariable = Memory.CpuRuntime.MklIntelPathVariable;

    static readonly Lazy<(bool Applied, string Description)> Choice = new(Choose, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Makes the choice once per process (thread safe); call before the first matmul.</summary>
    public static void Ensure() => _ = Choice.Value;

    /// <summary>True where this process's MKL was switched to its Intel code path.</summary>
    public static bool Applied => Choice.Value.Applied;

    /// <summary>What MKL runs in this process and why, for a run's header and benches' output.</summary>
    public static string Description => Choice.Value.Description;

    static (bool, string) Choose()
    {
        if (!Memory.CpuRuntime.IsAmdCpu()) return (false, "MKL's own code path (not an AMD x86 CPU)");
        if (Environment.GetEnvironmentVariable(EnvironmentVariable) == "0")
            return (false, $"MKL's generic code path for non-Intel CPUs ({EnvironmentVariable}=0)");
        if (!OperatingSystem.IsLinux()) return (false, "MKL's generic code path for non-Intel CPUs (the switch is Linux-only)");
        get_num_threads();   // loads libtorch (TorchSharp loads it on its first call) without running a matmul
        nint torchCpu = Native.Libc.LoadedLibrary("libtorch_cpu.so");
        if (torchCpu == 0 || !NativeLibrary.TryGetExport(torchCpu, "mkl_serv_intel_cpu_true", out var f))
            return (false, "libtorch's own BLAS (no MKL vendor check found in libtorch_cpu)");
        var check = (delegate* unmanaged[Cdecl]<int>)f;
        if (check() != 0) return Branch(torchCpu, "MKL's Intel code path (MKL already treats this CPU as Intel)");
        if (!Overwrite((byte*)f, [0xB8, 0x01, 0x00, 0x00, 0x00, 0xC3], out string why))   // mov eax, 1; ret
            return (false, $"MKL's generic code path for non-Intel CPUs (could not switch: {why})");
        if (check() != 1) return (false, "MKL's generic code path for non-Intel CPUs (the switch did not take)");
        return Branch(torchCpu, $"MKL's Intel code path on this AMD CPU (its vendor check answered as for Intel; {EnvironmentVariable}=0 keeps the generic path)");
    }

    /// <summary>
    /// Asks MKL which code branch it runs (<c>mkl_serv_cpu_detect</c>: chosen once, at the first call or GEMM, then cached;
    /// 0 is the generic branch it takes on AMD, 7 the AVX-512 one it takes here after the switch). 0 after the switch means
    /// a matmul ran before it: the process keeps the generic path, and says so rather than claim the switch.
    /// </summary>
    static (bool, string) Branch(nint torchCpu, string description)
    {
        if (!NativeLibrary.TryGetExport(torchCpu, "mkl_serv_cpu_detect", out var f)) return (true, description);
        int branch = ((delegate* unmanaged[Cdecl]<int>)f)();
        return branch != 0
            ? (true, description)
            : (false, "MKL's generic code path for non-Intel CPUs (a matmul ran in this process before the switch: MKL had already chosen)");
    }

    /// <summary>
    /// Writes code bytes over a function: its pages read-write-execute for the write (another thread may be running code
    /// on the same page), then back to read-execute. Fails cleanly where the kernel refuses writable code (SELinux execmem).
    /// </summary>
    static bool Overwrite(byte* at, ReadOnlySpan<byte> code, out string why)
    {
        nint page = Environment.SystemPageSize;
        nint start = (nint)at & ~(page - 1);
        nint length = (nint)at + code.Length - start;
        if (Native.Libc.Protect(start, length, Native.Libc.ProtRead | Native.Libc.ProtWrite | Native.Libc.ProtExec) != 0)
        {
            why = $"mprotect refused, errno {Marshal.GetLastPInvokeError()}";
            return false;
        }
        code.CopyTo(new Span<byte>(at, code.Length));
        Native.Libc.Protect(start, length, Native.Libc.ProtRead | Native.Libc.ProtExec);
        why = "";
        return true;
    }
}
