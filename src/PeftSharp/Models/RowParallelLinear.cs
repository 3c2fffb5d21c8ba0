using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Batch-1 decode's matrix-vector products on CPU, spread over torch's thread count by output rows. libtorch's
/// linear for one input row (a gemv) runs on one thread whatever set_num_threads says (measured: 2 threads gave the
/// same time as 1), so decode used half the box; each thread here runs the same linear on a contiguous block of the
/// weight's rows and the blocks are joined. Every output is still one row of the weight dotted with x; the kernel may
/// block a shorter matrix differently, so an output can differ in the last bit (measured: max |diff| 0 on 768/2048
/// wide layers, 1.4e-6 on logits of 11.6 in a small test model; greedy ids unchanged in every generation test). Only
/// for inference (grad off) and dense weights big enough that the thread hand-off (tens of microseconds) is small
/// next to the product.
/// </summary>
internal static class RowParallelLinear
{
    /// <summary>Weights smaller than this many elements (1 MiB in fp32) stay on the plain path.</summary>
    public const long MinElements = 1L << 18;

    /// <summary>x @ weight^T (+ bias), split by output rows when that pays; otherwise nn.functional.linear.</summary>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor? bias)
    {
        int threads = get_num_threads();
        if (threads < 2 || is_grad_enabled() || weight.device_type != DeviceType.CPU
            || x.numel() != weight.shape[1] || weight.numel() < MinElements || !weight.is_contiguous())
            return nn.functional.linear(x, weight, bias);
        long rows = weight.shape[0], per = (rows + threads - 1) / threads;
        int blocks = (int)((rows + per - 1) / per);
        var parts = new Tensor[blocks];
        try
        {
            // Worker threads have no dispose scope and their own grad mode: each part is disposed below, grad stays off.
            Parallel.For(0, blocks, i =>
            {
                using var _ = no_grad();
                long n = Math.Min(per, rows - i * per);
                using var w = weight.narrow(0, i * per, n);
                using var b = bias?.narrow(0, i * per, n);
                parts[i] = nn.functional.linear(x, w, b);
            });
            return cat(parts, -1);
        }
        finally { foreach (var p in parts) p?.Dispose(); }
    }
}
