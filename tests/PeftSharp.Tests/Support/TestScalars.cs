using static TorchSharp.torch;

namespace PeftSharp.Tests;

/// <summary>
/// The tests' forms of TorchSharp calls that take a number as a Scalar, each holding it until the call returns (see
/// src/PeftSharp/Kernels/ScalarArgs.cs and <see cref="Support.TestCodeHoldsItsScalars"/>): <c>t.fill_(v)</c>,
/// <c>t.eq(v)</c> and <c>full(shape, v)</c>. An integer keeps an integer Scalar, as the implicit conversion does.
/// </summary>
public static class TestScalars
{
    public static Tensor FillWith(this Tensor t, long v) => ScalarArgs.With(v, s => t.fill_(s));
    public static Tensor FillWith(this Tensor t, double v) => ScalarArgs.With(v, s => t.fill_(s));
    public static Tensor EqualTo(this Tensor t, long v) => ScalarArgs.With(v, s => t.eq(s));
    public static Tensor Full(long[] shape, double v, ScalarType? dtype = null) => ScalarArgs.With(v, s => full(shape, s, dtype));
}
