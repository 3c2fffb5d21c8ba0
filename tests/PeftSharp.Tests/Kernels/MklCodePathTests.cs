using System.Runtime.InteropServices;
using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Kernels;

/// <summary>
/// Kernels/MklCodePath: on an AMD CPU, building a model switches libtorch's MKL to its Intel code path (its vendor check
/// answers 1 afterwards), and fp32 matmuls on that path still equal float64 ones to fp32 rounding, in the layouts a
/// linear layer's forward and backward use. The speed it buys is measured by bench/lora-step.sh (with/without columns).
/// </summary>
public unsafe partial class MklCodePathTests
{
    static bool AmdLinuxWithMkl(out nint vendorCheck)
    {
        vendorCheck = 0;
        if (!OperatingSystem.IsLinux() || !PeftSharp.Memory.CpuRuntime.IsAmdCpu()) return false;
        get_num_threads();
        nint torchCpu = dlopen("libtorch_cpu.so", 1 | 4);   // RTLD_LAZY | RTLD_NOLOAD: the copy TorchSharp loaded
        return torchCpu != 0 && NativeLibrary.TryGetExport(torchCpu, "mkl_serv_intel_cpu_true", out vendorCheck);
    }

    [Fact]
    public void BuildingAModelSwitchesMklToItsIntelPathOnAmd()
    {
        using var model = new CausalLM(ModelConfig.FromJson(RandomModel.LlamaConfig()));
        if (!AmdLinuxWithMkl(out nint check))
        {
            Assert.False(MklCodePath.Applied, MklCodePath.Description);
            return;
        }
        Assert.True(MklCodePath.Applied, MklCodePath.Description);
        Assert.Contains("Intel code path", MklCodePath.Description);
        Assert.Equal(1, ((delegate* unmanaged[Cdecl]<int>)check)());
        // MKL's cached branch is not its generic one (0): the switch came before this process's first GEMM.
        Assert.True(NativeLibrary.TryGetExport(dlopen("libtorch_cpu.so", 1 | 4), "mkl_serv_cpu_detect", out var detect));
        Assert.NotEqual(0, ((delegate* unmanaged[Cdecl]<int>)detect)());
    }

    [Theory]
    [InlineData(1024, 512, 512)]     // the bench's q/v projections: tokens x hidden x hidden
    [InlineData(257, 1031, 515)]     // odd sizes: every tail of MKL's blocking
    [InlineData(64, 2048, 4096)]     // a wide lm_head
    public void Fp32MatmulsEqualFloat64OnesInEveryLayoutALinearUses(int m, int k, int n)
    {
        using var model = new CausalLM(ModelConfig.FromJson(RandomModel.LlamaConfig()));   // the switch, as users get it
        using var scope = NewDisposeScope();
        var gen = new TorchSharp.torch.Generator(7);
        var x = randn(m, k, generator: gen);
        var w = randn(n, k, generator: gen);
        var g = randn(m, n, generator: gen);
        var x64 = x.to_type(ScalarType.Float64);
        var w64 = w.to_type(ScalarType.Float64);
        var g64 = g.to_type(ScalarType.Float64);
        // forward x W^T, grad_input g W, grad_weight g^T x: the NT, NN and TN products of nn.functional.linear.
        Check(x.matmul(w.t()), x64.matmul(w64.t()), k);
        Check(g.matmul(w), g64.matmul(w64), n);
        Check(g.t().matmul(x), g64.t().matmul(x64), m);
    }

    /// <summary>Error within fp32 accumulation of <paramref name="depth"/> unit-variance products.</summary>
    static void Check(Tensor got, Tensor reference, int depth)
    {
        double err = (got.to_type(ScalarType.Float64) - reference).abs().max().item<double>();
        double bound = 4 * Math.Sqrt(depth) * depth * 6e-8 + 1e-4;
        Assert.True(err < bound, $"max |fp32 - float64| {err:G3} over bound {bound:G3} ({MklCodePath.Description})");
    }

    [LibraryImport("libc", EntryPoint = "dlopen", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint dlopen(string file, int mode);
}
