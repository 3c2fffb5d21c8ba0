using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>
/// One AdamW step on fp32 CPU tensors in a single pass: each element's parameter, gradient and two moments are read
/// once and the parameter and moments written once, on libtorch's OpenMP team, eight lanes at a time. The in-place
/// libtorch ops of <see cref="AdamW.Fp32UpdateOps"/> (decay, two moment updates, sqrt into a new tensor, divide, add eps,
/// addcdiv) sweep the same memory eight times, and the sqrt's buffer is a fresh allocation per parameter; the step is
/// memory-bound, so on a 37.7M-parameter set they took 387.7 ms against this kernel's 23.8 (`PeftSharp.Bench optim`,
/// alternated in one run): for full fine-tuning, whose optimiser touches every weight, a large share of the step. The arithmetic is torch.optim.AdamW's, in its order (decay, m = b1 m + (1 - b1) g,
/// v = b2 v + (1 - b2) g g, denom = sqrt(v) / sqrt(bc2) + eps, p += (-lr / bc1) m / denom), each product and sum rounded
/// to fp32 on its own (no fused multiply-add); libtorch's vectorised ops may fuse some, so the two paths agree to
/// rounding, not bit for bit (tested against the op path and against torch.optim.AdamW). Other devices, dtypes and
/// non-contiguous tensors take the op path.
/// </summary>
internal static unsafe class Fp32AdamKernel
{
    /// <summary>Elements per work item: 64K floats (256 KiB per tensor), enough to amortise a team hand-off.</summary>
    const int Chunk = 1 << 16;

    [ThreadStatic] static long steps;

    /// <summary>Tensors this kernel has stepped on the calling thread (tests check that the optimiser's path takes it).</summary>
    public static long StepsOnThisThread => steps;

    /// <summary>Whether the kernel can step these tensors: all fp32 on the CPU, contiguous, of one size.</summary>
    public static bool Applies(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq)
    {
        long n = param.NumberOfElements;
        foreach (var t in new[] { param, grad, expAvg, expAvgSq })
            if (t.device_type != DeviceType.CPU || t.dtype != ScalarType.Float32 || !t.is_contiguous() || t.NumberOfElements != n)
                return false;
        return true;
    }

    /// <summary>The step (call only where <see cref="Applies"/>).</summary>
    public static void Step(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, long step, double lr, AdamWOptions o)
    {
        var k = new Constants
        {
            Decay = (float)(1 - lr * o.WeightDecay),
            Beta1 = (float)o.Beta1, GradWeight1 = (float)(1 - o.Beta1),
            Beta2 = (float)o.Beta2, GradWeight2 = (float)(1 - o.Beta2),
            Bc2Sqrt = (float)Math.Sqrt(1 - Math.Pow(o.Beta2, step)),
            Eps = (float)o.Eps,
            NegStepSize = (float)(-(lr / (1 - Math.Pow(o.Beta1, step)))),
            Decays = o.WeightDecay != 0,
        };
        nint p = (nint)Kernels.KernelSupport.Ptr<float>(param), g = (nint)Kernels.KernelSupport.Ptr<float>(grad);
        nint m = (nint)Kernels.KernelSupport.Ptr<float>(expAvg), v = (nint)Kernels.KernelSupport.Ptr<float>(expAvgSq);
        long n = param.NumberOfElements;
        int team = Kernels.TorchThreads.Size;
        // A tensor under a team's worth of chunks (a LoRA matrix) is split evenly over the team, in runs of whole
        // 16-float lines, rather than left to one thread.
        long chunk = Math.Clamp((n + team - 1) / team + 15 & ~15L, 16, Chunk);
        int chunks = (int)((n + chunk - 1) / chunk);
        Kernels.TorchThreads.For(chunks, team, c =>
        {
            long start = c * chunk;
            Range(in k, (float*)p + start, (float*)g + start, (float*)m + start, (float*)v + start, (int)Math.Min(chunk, n - start));
        });
        GC.KeepAlive(param); GC.KeepAlive(grad); GC.KeepAlive(expAvg); GC.KeepAlive(expAvgSq);
        steps++;
    }

    struct Constants
    {
        public float Decay, Beta1, GradWeight1, Beta2, GradWeight2, Bc2Sqrt, Eps, NegStepSize;
        public bool Decays;
    }

    static void Range(in Constants k, float* p, float* g, float* m, float* v, int len)
    {
        int j = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var decay = Vector256.Create(k.Decay);
            var beta1 = Vector256.Create(k.Beta1);
            var gw1 = Vector256.Create(k.GradWeight1);
            var beta2 = Vector256.Create(k.Beta2);
            var gw2 = Vector256.Create(k.GradWeight2);
            var bc2 = Vector256.Create(k.Bc2Sqrt);
            var eps = Vector256.Create(k.Eps);
            var negStep = Vector256.Create(k.NegStepSize);
            for (; j + 8 <= len; j += 8)
            {
                var gj = Vector256.Load(g + j);
                var pj = Vector256.Load(p + j);
                if (k.Decays) pj *= decay;
                var mj = Vector256.Load(m + j) * beta1 + gw1 * gj;
                var vj = Vector256.Load(v + j) * beta2 + gw2 * gj * gj;
                var denom = Vector256.Sqrt(vj) / bc2 + eps;
                Vector256.Store(mj, m + j);
                Vector256.Store(vj, v + j);
                Vector256.Store(pj + negStep * mj / denom, p + j);
            }
        }
        for (; j < len; j++)
        {
            float gj = g[j], pj = p[j];
            if (k.Decays) pj *= k.Decay;
            float mj = m[j] * k.Beta1 + k.GradWeight1 * gj;
            float vj = v[j] * k.Beta2 + k.GradWeight2 * gj * gj;
            float denom = MathF.Sqrt(vj) / k.Bc2Sqrt + k.Eps;
            m[j] = mj;
            v[j] = vj;
            p[j] = pj + k.NegStepSize * mj / denom;
        }
    }
}
