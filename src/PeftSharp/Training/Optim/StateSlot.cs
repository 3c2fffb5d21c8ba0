using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>One named state tensor of one parameter (e.g. "exp_avg", or "exp_avg.codes" for 8-bit).</summary>
internal sealed record StateSlot(string Name, ScalarType Dtype, long[] Shape)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public long Bytes => ElementCount * ElementSize(Dtype);

    public static int ElementSize(ScalarType t) => t switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
        ScalarType.Byte or ScalarType.Int8 or ScalarType.Bool => 1,
        _ => throw new NotSupportedException($"optimiser state of type {t}"),
    };
}
