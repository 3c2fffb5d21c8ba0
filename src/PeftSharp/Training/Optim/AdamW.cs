using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>
/// AdamW as torch.optim.AdamW computes it: decoupled weight decay, bias-corrected moments, eps added outside
/// the square root; fp32 moments. Written with in-place TorchSharp ops so it runs on any device.
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

    /// <summary>One AdamW step on fp32 moments, in torch.optim.AdamW's order of operations.</summary>
    internal static void Fp32Update(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, long step, double lr, AdamWOptions o)
    {
        if (o.WeightDecay != 0) param.mul_(1 - lr * o.WeightDecay);
        expAvg.mul_(o.Beta1).add_(grad, 1 - o.Beta1);
        expAvgSq.mul_(o.Beta2).addcmul_(grad, grad, 1 - o.Beta2);
        double bc1 = 1 - Math.Pow(o.Beta1, step);
        double bc2Sqrt = Math.Sqrt(1 - Math.Pow(o.Beta2, step));
        using var denom = expAvgSq.sqrt();
        denom.div_(bc2Sqrt).add_(o.Eps);
        param.addcdiv_(expAvg, denom, -(lr / bc1));
    }
}
