using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>
/// The blockwise 8-bit AdamW step of <see cref="Blockwise8bitAdamKernel"/> written with TorchSharp ops, for
/// parameters the fused CPU kernel does not take (another device, or a 16-bit dtype). Same arithmetic, same
/// nearest-code rounding (bucketize on the code midpoints), more memory traffic.
/// </summary>
internal static class Blockwise8bitAdamTorch
{
    static readonly Dictionary<(bool, string), (Tensor Values, Tensor Midpoints)> Maps = new();

    public static void Step(Tensor param, Tensor grad, Tensor mCodes, Tensor mAbsmax, Tensor vCodes, Tensor vAbsmax,
                            long step, double lr, AdamWOptions o)
    {
        const int B = Blockwise8bitAdamKernel.BlockSize;
        using var scope = NewDisposeScope();
        long n = param.NumberOfElements, blocks = mAbsmax.NumberOfElements, pad = blocks * B - n;
        var device = param.device;
        var (sv, smid) = Map(true, device);
        var (uv, umid) = Map(false, device);

        Tensor Blocked(Tensor flat) => (pad > 0 ? cat([flat, zeros(pad, flat.dtype, device)]) : flat).view(blocks, B);
        var g = Blocked(grad.reshape(-1).to_type(ScalarType.Float32));
        var m = Blocked(sv.index_select(0, mCodes.to_type(ScalarType.Int64))).mul_(mAbsmax.unsqueeze(1));
        var v = Blocked(uv.index_select(0, vCodes.to_type(ScalarType.Int64))).mul_(vAbsmax.unsqueeze(1));
        // Every number is a Scalar held until its op has returned (see ScalarArgs).
        AdamW.UpdateMoments(m, v, g, o);

        double stepSize = lr / (1 - Math.Pow(o.Beta1, step));
        double bc2Sqrt = Math.Sqrt(1 - Math.Pow(o.Beta2, step));
        using var bc2 = bc2Sqrt.ToScalar();
        using var eps = o.Eps.ToScalar();
        using var decay = (1 - lr * o.WeightDecay).ToScalar();
        using var minusStep = (-stepSize).ToScalar();
        var update = (m / v.sqrt().div_(bc2).add_(eps, ScalarArgs.One)).reshape(-1).narrow(0, 0, n).view(param.shape);
        var p32 = param.to_type(ScalarType.Float32).mul(decay).add_(update, minusStep);
        param.copy_(p32);

        var newM = m.abs().amax([1]);
        var newV = v.amax([1]);
        mAbsmax.copy_(newM);
        vAbsmax.copy_(newV);
        mCodes.copy_(Codes(m, newM, smid, n));
        vCodes.copy_(Codes(v, newV, umid, n));
    }

    static Tensor Codes(Tensor x, Tensor absmax, Tensor midpoints, long n)
    {
        // All-zero blocks keep scale 0 and quantise to the code of 0.
        var inv = where(ScalarArgs.With(0L, zero => absmax.gt(zero)), absmax.reciprocal(), zeros_like(absmax)).unsqueeze(1);
        return bucketize(x * inv, midpoints).reshape(-1).narrow(0, 0, n).to_type(ScalarType.Byte);
    }

    static (Tensor, Tensor) Map(bool signed, Device device)
    {
        lock (Maps)
        {
            var key = (signed, device.ToString());
            if (!Maps.TryGetValue(key, out var m))
            {
                var map = signed ? DynamicMap.Signed : DynamicMap.Unsigned;
                m = (tensor(map.Values).to(device).DetachFromDisposeScope(), tensor(map.Midpoints.ToArray()).to(device).DetachFromDisposeScope());
                Maps[key] = m;
            }
            return m;
        }
    }
}
