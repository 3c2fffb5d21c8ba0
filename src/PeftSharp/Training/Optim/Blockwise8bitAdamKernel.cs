using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>
/// One AdamW step on blockwise 8-bit moments, fused per block as bitsandbytes' blockwise optimiser does:
/// dequantise the block's m and v (code value x block absmax), update them and the parameter in fp32, take the
/// new absmax of each moment over the block, requantise. m uses the signed dynamic map, v the unsigned one.
/// CPU, fp32, contiguous tensors; blocks are spread over threads.
/// </summary>
internal static unsafe class Blockwise8bitAdamKernel
{
    public const int BlockSize = 256;

    public static void Step(Tensor param, Tensor grad, Tensor mCodes, Tensor mAbsmax, Tensor vCodes, Tensor vAbsmax,
                            long step, double lr, AdamWOptions o)
    {
        Require(param, ScalarType.Float32, "parameter");
        Require(grad, ScalarType.Float32, "gradient");
        long n = param.NumberOfElements;
        if (grad.NumberOfElements != n) throw new ArgumentException($"gradient has {grad.NumberOfElements} elements, parameter {n}");
        using var g = grad.is_contiguous() ? grad.alias() : grad.contiguous();
        float* p = Ptr<float>(param), gp = Ptr<float>(g), am = Ptr<float>(mAbsmax), av = Ptr<float>(vAbsmax);
        byte* cm = Ptr<byte>(mCodes), cv = Ptr<byte>(vCodes);

        float beta1 = (float)o.Beta1, beta2 = (float)o.Beta2;
        float decay = (float)(1 - lr * o.WeightDecay);
        float stepSize = (float)(lr / (1 - Math.Pow(o.Beta1, step)));
        float invBc2Sqrt = (float)(1 / Math.Sqrt(1 - Math.Pow(o.Beta2, step)));
        float eps = (float)o.Eps, gm = 1 - beta1, gv = 1 - beta2;
        var sMap = DynamicMap.Signed;
        var uMap = DynamicMap.Unsigned;
        long blocks = (n + BlockSize - 1) / BlockSize;
        int chunks = (int)Math.Min(blocks, Environment.ProcessorCount * 4L);
        Parallel.For(0, chunks, c =>
        {
            long b0 = blocks * c / chunks, b1 = blocks * (c + 1) / chunks;
            float* m = stackalloc float[BlockSize];
            float* v = stackalloc float[BlockSize];
            float[] sv = sMap.Values, uv = uMap.Values;
            for (long b = b0; b < b1; b++)
            {
                long start = b * BlockSize;
                int len = (int)Math.Min(BlockSize, n - start);
                float scaleM = am[b] * beta1, scaleV = av[b] * beta2, maxM = 0, maxV = 0;
                for (int j = 0; j < len; j++)
                {
                    long i = start + j;
                    float gi = gp[i];
                    float mj = sv[cm[i]] * scaleM + gm * gi;
                    float vj = uv[cv[i]] * scaleV + gv * gi * gi;
                    m[j] = mj; v[j] = vj;
                    maxM = MathF.Max(maxM, MathF.Abs(mj));
                    maxV = MathF.Max(maxV, vj);
                    p[i] = p[i] * decay - stepSize * mj / (MathF.Sqrt(vj) * invBc2Sqrt + eps);
                }
                am[b] = maxM; av[b] = maxV;
                // An all-zero block (e.g. LoRA A while B is still zero) keeps scale 0 and codes for 0.
                float invM = maxM > 0 ? 1 / maxM : 0, invV = maxV > 0 ? 1 / maxV : 0;
                for (int j = 0; j < len; j++)
                {
                    cm[start + j] = sMap.Quantize(m[j] * invM);
                    cv[start + j] = uMap.Quantize(v[j] * invV);
                }
            }
        });
    }

    static void Require(Tensor t, ScalarType dtype, string what)
    {
        if (t.device_type != DeviceType.CPU || t.dtype != dtype)
            throw new NotSupportedException($"8-bit AdamW runs on CPU {dtype} {what}s; got {t.device_type} {t.dtype}");
    }

    static T* Ptr<T>(Tensor t) where T : unmanaged
    {
        if (!t.is_contiguous()) throw new ArgumentException("8-bit AdamW needs contiguous tensors");
        return (T*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));
    }
}
