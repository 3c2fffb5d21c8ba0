using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>
/// One AdamW step on blockwise 8-bit moments, fused per block as bitsandbytes' blockwise optimiser does:
/// dequantise the block's m and v (code value x block absmax), update them and the parameter in fp32, take the
/// new absmax of each moment over the block, requantise. m uses the signed dynamic map, v the unsigned one.
/// CPU, fp32, contiguous tensors; blocks are spread over threads. Where AVX2 exists the blocks run through
/// <see cref="Blockwise8bitAdamVector"/> (AVX-512 blocks where the CPU has them, else AVX2), which does the same float
/// operations in the same order 16 or 8 lanes at a time and finds the same codes (bit-identical); the scalar block
/// below stays as its reference (<see cref="StepScalar"/>, tested against).
/// </summary>
internal static unsafe class Blockwise8bitAdamKernel
{
    public const int BlockSize = 256;

    /// <summary>Whether <see cref="Step"/> runs the vectorised blocks on this CPU.</summary>
    public static bool IsVectorised => Blockwise8bitAdamVector.IsSupported;

    /// <summary>The kernel this CPU runs, for the benches' output.</summary>
    internal static string Description => Blockwise8bitAdamVector.Description;

    /// <summary>The step, vectorised where the CPU allows.</summary>
    public static void Step(Tensor param, Tensor grad, Tensor mCodes, Tensor mAbsmax, Tensor vCodes, Tensor vAbsmax,
                            long step, double lr, AdamWOptions o)
        => Run(param, grad, mCodes, mAbsmax, vCodes, vAbsmax, step, lr, o, vectorised: Blockwise8bitAdamVector.IsSupported);

    /// <summary>The scalar step: the oracle the vectorised one must equal bit for bit.</summary>
    public static void StepScalar(Tensor param, Tensor grad, Tensor mCodes, Tensor mAbsmax, Tensor vCodes, Tensor vAbsmax,
                                  long step, double lr, AdamWOptions o)
        => Run(param, grad, mCodes, mAbsmax, vCodes, vAbsmax, step, lr, o, vectorised: false);

    static void Run(Tensor param, Tensor grad, Tensor mCodes, Tensor mAbsmax, Tensor vCodes, Tensor vAbsmax,
                    long step, double lr, AdamWOptions o, bool vectorised)
    {
        Require(param, ScalarType.Float32, "parameter");
        Require(grad, ScalarType.Float32, "gradient");
        long n = param.NumberOfElements;
        if (grad.NumberOfElements != n) throw new ArgumentException($"gradient has {grad.NumberOfElements} elements, parameter {n}");
        using var g = grad.is_contiguous() ? grad.alias() : grad.contiguous();
        var k = new BlockStep
        {
            P = Ptr<float>(param), G = Ptr<float>(g), MAbsmax = Ptr<float>(mAbsmax), VAbsmax = Ptr<float>(vAbsmax),
            MCodes = Ptr<byte>(mCodes), VCodes = Ptr<byte>(vCodes),
            Beta1 = (float)o.Beta1, Beta2 = (float)o.Beta2,
            Decay = (float)(1 - lr * o.WeightDecay),
            StepSize = (float)(lr / (1 - Math.Pow(o.Beta1, step))),
            InvBc2Sqrt = (float)(1 / Math.Sqrt(1 - Math.Pow(o.Beta2, step))),
            Eps = (float)o.Eps, Gm = 1 - (float)o.Beta1, Gv = 1 - (float)o.Beta2,
        };
        long blocks = (n + BlockSize - 1) / BlockSize;
        int team = Kernels.TorchThreads.Size;
        // A tensor smaller than a team's worth of whole items (a LoRA matrix: 128 blocks) is split evenly over the team
        // rather than left to one thread.
        long perItem = Math.Clamp((blocks + team - 1) / team, 1, BlocksPerItem);
        int items = (int)((blocks + perItem - 1) / perItem);
        // On libtorch's team, like the other CPU kernels (TorchThreads says why not .NET's pool).
        Kernels.TorchThreads.For(items, team, item =>
        {
            long b0 = item * perItem, b1 = Math.Min(blocks, b0 + perItem);
            float* m = stackalloc float[BlockSize];
            float* v = stackalloc float[BlockSize];
            for (long b = b0; b < b1; b++)
            {
                long start = b * BlockSize;
                int len = (int)Math.Min(BlockSize, n - start);
                if (vectorised) Blockwise8bitAdamVector.Block(in k, b, start, len, m, v);
                else ScalarBlock(in k, b, start, len, m, v);
            }
        });
        GC.KeepAlive(param); GC.KeepAlive(mCodes); GC.KeepAlive(mAbsmax); GC.KeepAlive(vCodes); GC.KeepAlive(vAbsmax);
    }

    /// <summary>Blocks per work item: 64K elements, enough to amortise a team hand-off.</summary>
    const int BlocksPerItem = 256;

    /// <summary>The per-step constants and the tensors' memory, shared by the scalar and vector blocks.</summary>
    internal struct BlockStep
    {
        public float* P, G, MAbsmax, VAbsmax;
        public byte* MCodes, VCodes;
        public float Beta1, Beta2, Decay, StepSize, InvBc2Sqrt, Eps, Gm, Gv;
    }

    static void ScalarBlock(in BlockStep k, long b, long start, int len, float* m, float* v)
    {
        float maxM = 0, maxV = 0;
        UpdateElements(in k, b, start, 0, len, m, v, ref maxM, ref maxV);
        k.MAbsmax[b] = maxM; k.VAbsmax[b] = maxV;
        // An all-zero block (e.g. LoRA A while B is still zero) keeps scale 0 and codes for 0.
        float invM = maxM > 0 ? 1 / maxM : 0, invV = maxV > 0 ? 1 / maxV : 0;
        for (int j = 0; j < len; j++)
        {
            k.MCodes[start + j] = DynamicMap.Signed.Quantize(m[j] * invM);
            k.VCodes[start + j] = DynamicMap.Unsigned.Quantize(v[j] * invV);
        }
    }

    /// <summary>
    /// Elements [from, len) of block <paramref name="b"/>, one at a time: the new moments into m/v, their running
    /// maxima, the parameter update. The reference arithmetic (the vector block runs it for its tail).
    /// </summary>
    internal static void UpdateElements(in BlockStep k, long b, long start, int from, int len, float* m, float* v, ref float maxM, ref float maxV)
    {
        float[] sv = DynamicMap.Signed.Values, uv = DynamicMap.Unsigned.Values;
        float scaleM = k.MAbsmax[b] * k.Beta1, scaleV = k.VAbsmax[b] * k.Beta2;
        for (int j = from; j < len; j++)
        {
            long i = start + j;
            float gi = k.G[i];
            float mj = sv[k.MCodes[i]] * scaleM + k.Gm * gi;
            float vj = uv[k.VCodes[i]] * scaleV + k.Gv * gi * gi;
            m[j] = mj; v[j] = vj;
            maxM = MathF.Max(maxM, MathF.Abs(mj));
            maxV = MathF.Max(maxV, vj);
            k.P[i] = k.P[i] * k.Decay - k.StepSize * mj / (MathF.Sqrt(vj) * k.InvBc2Sqrt + k.Eps);
        }
    }

    static void Require(Tensor t, ScalarType dtype, string what)
    {
        if (t.device_type != DeviceType.CPU || t.dtype != dtype)
            throw new NotSupportedException($"8-bit AdamW runs on CPU {dtype} {what}s; got {t.device_type} {t.dtype}");
    }

    static T* Ptr<T>(Tensor t) where T : unmanaged =>
        t.is_contiguous() ? Kernels.KernelSupport.Ptr<T>(t) : throw new ArgumentException("8-bit AdamW needs contiguous tensors");
}
