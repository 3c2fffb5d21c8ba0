using PeftSharp.Models;
using PeftSharp.Tests.Quantization;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Kernels;

/// <summary>What the kernel tests share: a tolerance check, and one LoRA step through the model users train.</summary>
internal static class KernelAssert
{
    /// <summary>
    /// Whether an element kernel (RMSNorm, SwiGLU, the loss) runs here, asserting that it does on every CPU with AVX2 +
    /// FMA (or AVX-512F): a kernel test can only skip its body on a CPU with neither, where the op chains run.
    /// </summary>
    public static bool ElementKernelRuns(bool supported)
    {
        Assert.True(supported || !(System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported),
            "the CPU has AVX2 + FMA but the kernel says it is not supported");
        return supported;
    }

    /// <summary>Same shape, and max |expected - actual| (in float64) within <paramref name="tol"/>.</summary>
    public static void Near(Tensor expected, Tensor actual, double tol)
    {
        Assert.Equal(expected.shape, actual.shape);
        double err = TestPaths.MaxAbsError(expected.to_type(ScalarType.Float64), actual.to_type(ScalarType.Float64));
        Assert.True(err <= tol, $"max abs error {err} > {tol}");
    }

    /// <summary>
    /// One LoRA training step: forward, mean cross entropy of each position against <paramref name="ids"/>, backward;
    /// the loss and the adapters' gradients (taken off the adapters, outside any dispose scope).
    /// </summary>
    public static (double Loss, Tensor[] Grads) LoraStep(CausalLM model, List<TestLora> adapters, Tensor ids)
    {
        using var scope = NewDisposeScope();
        var logits = model.Forward(ids);
        var loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]), ids.view(-1));
        loss.backward();
        var grads = TestLora.TakeGrads(adapters);
        return (loss.item<float>(), grads);
    }

    /// <summary>Each gradient within 1e-4 of the reference's, relative to the reference's largest entry where that is over 1.</summary>
    public static void GradsNear(Tensor[] reference, Tensor[] actual)
    {
        Assert.Equal(reference.Length, actual.Length);
        for (int i = 0; i < actual.Length; i++)
            Near(reference[i], actual[i], 1e-4 * Math.Max(1, reference[i].abs().max().item<float>()));
    }
}
