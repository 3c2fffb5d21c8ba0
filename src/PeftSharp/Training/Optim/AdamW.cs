using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>
/// AdamW as torch.optim.AdamW computes it: decoupled weight decay, bias-corrected moments, eps added outside
/// the square root; fp32 moments. On the CPU one fused pass per tensor (Fp32AdamKernel); in-place TorchSharp ops on
/// any other device.
/// </summary>
internal class AdamW : AdamWBase
{
    public AdamW(IReadOnlyList<(string Name, Parameter Param)> parameters, AdamWOptions? options = null, IStateStore? store = null)
        : base(parameters, options ?? new AdamWOptions(), store) { }

    protected override string Kind => "AdamW";

    protected override StateSlot[] SlotsFor(Parameter p) =>
        [new("exp_avg", ScalarType.Float32, p.shape), new("exp_avg_sq", ScalarType.Float32, p.shape)];

    protected override void Update(Tensor param, Tensor grad, Tensor[] state, long step) =>
        Fp32Update(param, grad, state[0], state[1], step, LearningRate, Options);

    /// <summary>m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2 in place, as torch.optim.AdamW (the 8-bit step's too).
    /// Call inside a dispose scope: the in-place ops hand back wrappers.</summary>
    internal static void UpdateMoments(Tensor expAvg, Tensor expAvgSq, Tensor grad, AdamWOptions o)
    {
        using var beta1 = o.Beta1.ToScalar();   // held until its op has returned (see ScalarArgs)
        using var gradWeight1 = (1 - o.Beta1).ToScalar();
        using var beta2 = o.Beta2.ToScalar();
        using var gradWeight2 = (1 - o.Beta2).ToScalar();
        expAvg.mul_(beta1).add_(grad, gradWeight1);
        expAvgSq.mul_(beta2).addcmul_(grad, grad, gradWeight2);
    }

    /// <summary>One AdamW step on fp32 moments, in torch.optim.AdamW's order of operations: on the CPU in one fused
    /// pass (<see cref="Fp32AdamKernel"/>), elsewhere (or on non-contiguous tensors) with in-place libtorch ops.</summary>
    internal static void Fp32Update(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, long step, double lr, AdamWOptions o)
    {
        if (Fp32AdamKernel.Applies(param, grad, expAvg, expAvgSq)) Fp32AdamKernel.Step(param, grad, expAvg, expAvgSq, step, lr, o);
        else Fp32UpdateOps(param, grad, expAvg, expAvgSq, step, lr, o);
    }

    /// <summary>The step as in-place libtorch ops (any device); the fused kernel's oracle in the tests.</summary>
    internal static void Fp32UpdateOps(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, long step, double lr, AdamWOptions o)
    {
        // Every number is a Scalar held until its op has returned (see ScalarArgs).
        if (o.WeightDecay != 0)
        {
            using var decay = (1 - lr * o.WeightDecay).ToScalar();
            param.mul_(decay);
        }
        UpdateMoments(expAvg, expAvgSq, grad, o);
        double bc1 = 1 - Math.Pow(o.Beta1, step);
        double bc2Sqrt = Math.Sqrt(1 - Math.Pow(o.Beta2, step));
        using var denom = expAvgSq.sqrt();
        using var bc2 = bc2Sqrt.ToScalar();
        using var eps = o.Eps.ToScalar();
        using var stepSize = (-(lr / bc1)).ToScalar();
        denom.div_(bc2).add_(eps, ScalarArgs.One);
        param.addcdiv_(expAvg, denom, stepSize);
    }
}
