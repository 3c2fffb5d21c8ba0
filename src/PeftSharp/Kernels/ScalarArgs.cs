using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp;

/// <summary>
/// Tensor arithmetic with a number, written so that the number's <see cref="Scalar"/> lives until libtorch has read it.
/// <para>
/// TorchSharp 0.107 turns a number handed to a tensor op (<c>t * 0.5</c>, <c>t.masked_fill(m, -inf)</c>, and the
/// alpha = 1 inside <c>a + b</c> and <c>a.add_(b)</c>) into a <see cref="Scalar"/> with a finalizer, reads its native
/// handle and calls libtorch without keeping the Scalar reachable. A garbage collection started by another thread
/// during that call can finalize it, and libtorch then reads freed memory: CI failed once in the DoRA dropout test with
/// "Expected false to be true ... toFloat" from <c>add</c> in the residual add (dotnet/TorchSharp#1434 and #1496,
/// both open, dispose these Scalars upstream). Serving, where requests run on several threads, is exposed the same way.
/// Here the Scalar is a <c>using</c> local (reachable until after the call, then freed at once) or a static (never
/// collected). <c>a - b</c>, <c>a * b</c> and <c>a / b</c> between tensors make no Scalar and stay operators.
/// <c>ScalarArgsTests</c> lists every call in PeftSharp's assemblies that still makes one.
/// </para>
/// </summary>
internal static class ScalarArgs
{
    /// <summary>1, for an add's alpha (<c>t.add_(scalar, ScalarArgs.One)</c>): a static, so reachable for the life of
    /// the process. Never dispose it.</summary>
    public static readonly Scalar One = 1.ToScalar();

    /// <summary>-1, as <see cref="One"/>.</summary>
    public static readonly Scalar MinusOne = (-1).ToScalar();

    /// <summary><c>a + b</c>.</summary>
    public static Tensor Plus(this Tensor a, Tensor b)
    {
        var sum = a.add(b, One);
        GC.KeepAlive(a);   // a temporary outside any dispose scope has the same finalizer race (the tensors of a scope are held by it)
        GC.KeepAlive(b);
        return sum;
    }

    /// <summary><c>a.add_(b)</c>.</summary>
    public static Tensor PlusInPlace(this Tensor a, Tensor b)
    {
        a.add_(b, One);
        GC.KeepAlive(b);
        return a;
    }

    /// <summary><c>a + v</c> (an integer keeps an integer tensor's dtype, as the operator does).</summary>
    public static Tensor Plus(this Tensor a, long v) { using var s = v.ToScalar(); return a.add(s, One); }

    /// <summary><c>a + v</c>.</summary>
    public static Tensor Plus(this Tensor a, double v) { using var s = v.ToScalar(); return a.add(s, One); }

    /// <summary><c>a - v</c>.</summary>
    public static Tensor Minus(this Tensor a, long v) { using var s = v.ToScalar(); return a.sub(s); }

    /// <summary><c>a - v</c>.</summary>
    public static Tensor Minus(this Tensor a, double v) { using var s = v.ToScalar(); return a.sub(s); }

    /// <summary><c>a * v</c>.</summary>
    public static Tensor Times(this Tensor a, double v) { using var s = v.ToScalar(); return a.mul(s); }

    /// <summary><c>a / v</c> (true division, as the operator).</summary>
    public static Tensor DividedBy(this Tensor a, long v) { using var s = v.ToScalar(); return a.div(s); }

    /// <summary><c>a / v</c>.</summary>
    public static Tensor DividedBy(this Tensor a, double v) { using var s = v.ToScalar(); return a.div(s); }

    /// <summary><c>arange(0, end)</c> with <paramref name="dtype"/> on <paramref name="device"/>.</summary>
    public static Tensor Arange(long end, ScalarType dtype, Device device) => Arange(0, end, dtype, device);

    /// <summary><c>arange(start, end)</c> with <paramref name="dtype"/> on <paramref name="device"/>.</summary>
    public static Tensor Arange(long start, long end, ScalarType dtype, Device device)
    {
        using var first = start.ToScalar();
        using var stop = end.ToScalar();
        return arange(first, stop, dtype, device);
    }

    /// <summary>Any other op that takes a number (masked_fill, clamp, full, pow, comparisons): the Scalar is held
    /// until <paramref name="op"/> returns.</summary>
    public static Tensor With(double v, Func<Scalar, Tensor> op) { using var s = v.ToScalar(); return op(s); }

    /// <summary>As <see cref="With(double, Func{Scalar, Tensor})"/> with an integer Scalar (integer tensors keep their dtype).</summary>
    public static Tensor With(long v, Func<Scalar, Tensor> op) { using var s = v.ToScalar(); return op(s); }

    /// <summary>As <see cref="With(double, Func{Scalar, Tensor})"/> with a float32 Scalar (where the code made one).</summary>
    public static Tensor With(float v, Func<Scalar, Tensor> op) { using var s = v.ToScalar(); return op(s); }
}
