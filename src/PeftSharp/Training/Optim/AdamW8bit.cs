using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>
/// AdamW with 8-bit moments (bitsandbytes' blockwise AdamW8bit): each moment is stored as one byte per element
/// plus an fp32 absmax per block of 256, about 2 bytes of state per parameter instead of 8. Parameters with
/// fewer than <see cref="MinElementsFor8Bit"/> elements keep fp32 state and the plain AdamW update, as in
/// bitsandbytes (min_8bit_size). CPU fp32 parameters take a fused C# kernel, others the same step in TorchSharp ops.
/// </summary>
internal class AdamW8bit : AdamWBase
{
    public const long MinElementsFor8Bit = 4096;

    public AdamW8bit(IReadOnlyList<(string Name, Parameter Param)> parameters, AdamWOptions? options = null, IStateStore? store = null)
        : base(parameters, options ?? new AdamWOptions(), store) { }

    protected override string Kind => "AdamW8bit";

    static bool Is8Bit(long elements) => elements >= MinElementsFor8Bit;

    protected override StateSlot[] SlotsFor(Parameter p)
    {
        long n = p.NumberOfElements;
        if (!Is8Bit(n))
            return [new("exp_avg", ScalarType.Float32, p.shape), new("exp_avg_sq", ScalarType.Float32, p.shape)];
        long blocks = (n + Blockwise8bitAdamKernel.BlockSize - 1) / Blockwise8bitAdamKernel.BlockSize;
        return
        [
            new("exp_avg.codes", ScalarType.Byte, [n]), new("exp_avg.absmax", ScalarType.Float32, [blocks]),
            new("exp_avg_sq.codes", ScalarType.Byte, [n]), new("exp_avg_sq.absmax", ScalarType.Float32, [blocks]),
        ];
    }

    protected override void Update(Tensor param, Tensor grad, Tensor[] state, long step)
    {
        if (state.Length == 2) AdamW.Fp32Update(param, grad, state[0], state[1], step, LearningRate, Options);
        else if (param.device_type == DeviceType.CPU && param.dtype == ScalarType.Float32 && grad.dtype == ScalarType.Float32)
            Blockwise8bitAdamKernel.Step(param, grad, state[0], state[1], state[2], state[3], step, LearningRate, Options);
        else
            Blockwise8bitAdamTorch.Step(param, grad, state[0], state[1], state[2], state[3], step, LearningRate, Options);
    }
}
