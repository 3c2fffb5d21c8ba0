using PeftSharp.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Kernels;

/// <summary>
/// TorchSharp's temporary Scalars can be finalized while libtorch reads them (src/PeftSharp/Kernels/ScalarArgs.cs):
/// CI failed once in the DoRA dropout test with "Expected false to be true ... toFloat" from the residual add, and a
/// loop of <c>x + y</c> beside a thread that collects fails ~80 times in 1.3M adds (0 with the alpha held).
/// </summary>
public class ScalarArgsTests
{
    /// <summary>The library hands libtorch no Scalar that nobody holds (ScalarArgs itself holds them).</summary>
    [Fact]
    public void NoCallInTheLibraryMakesAnUnheldScalar() => ScalarTemporaries.AssertNone(typeof(PeftModel).Assembly.Location, "PeftSharp.ScalarArgs");

    /// <summary>The scan sees each kind of call it looks for, and not the safe forms.</summary>
    [Fact]
    public void TheScanFindsTheCallsThatMakeUnheldScalars()
    {
        var found = ScalarTemporaries.In(typeof(ScalarArgsTests).Assembly.Location)
            .Where(f => f.StartsWith(typeof(Samples).FullName!.Replace('+', '/'), StringComparison.Ordinal)).ToList();
        Assert.Contains(found, f => f.Contains(".Sum: TorchSharp.torch/Tensor::op_Addition(TorchSharp.torch/Tensor, TorchSharp.torch/Tensor)"));
        Assert.Contains(found, f => f.Contains(".Scaled: TorchSharp.torch/Tensor::op_Multiply(TorchSharp.torch/Tensor, float64)"));
        Assert.Contains(found, f => f.Contains(".Filled: TorchSharp.Scalar::op_Implicit(int32)"));
        Assert.Contains(found, f => f.Contains(".Accumulated: TorchSharp.torch/Tensor::add_(TorchSharp.torch/Tensor)"));
        Assert.DoesNotContain(found, f => f.Contains(".Held:"));
    }

    static class Samples
    {
        public static Tensor Sum(Tensor a, Tensor b) => a + b;
        public static Tensor Scaled(Tensor a) => a * 0.5;
        public static Tensor Filled(Tensor a, Tensor m) => a.masked_fill(m, 0);
        public static Tensor Accumulated(Tensor a, Tensor b) => a.add_(b);
        public static Tensor Held(Tensor a, Tensor b) => ((a - b) * b / a).Plus(a.Plus(b).Times(0.5)).Plus(ScalarArgs.With(0L, z => a.masked_fill(a.gt(b), z)));
    }

    [Fact]
    public void TheHelpersComputeWhatTheOperatorsCompute()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(7);
        var a = randn([5, 3], generator: g);
        var b = randn([5, 3], generator: g);
        var i = randint(-9, 9, [4], ScalarType.Int64, generator: g);
        Same(a + b, a.Plus(b));
        Same(a + 2.5, a.Plus(2.5));
        Same(a - 2.5, a.Minus(2.5));
        Same(a * 0.3, a.Times(0.3));
        Same(a / 0.3, a.DividedBy(0.3));
        Same(i + 2, i.Plus(2L));      // an integer keeps an integer tensor's dtype
        Same(i - 2, i.Minus(2L));
        Same(i / 2, i.DividedBy(2L)); // true division, as the operator
        Same(a.masked_fill(a.gt(b), -1.5), ScalarArgs.With(-1.5, v => a.masked_fill(a.gt(b), v)));
        var acc = a.clone();
        acc.add_(b);
        Same(acc, a.clone().PlusInPlace(b));

        static void Same(Tensor expected, Tensor actual)
        {
            Assert.Equal(expected.dtype, actual.dtype);
            Assert.True(expected.eq(actual).all().item<bool>(), $"{expected.str()} vs {actual.str()}");
        }
    }

    /// <summary>
    /// The helpers under a thread that collects and runs finalizers without pause: the pattern that made the operator
    /// read freed Scalars (the same loop with <c>x + y</c> fails tens of times per million).
    /// </summary>
    [Fact]
    public void TheHelpersHoldTheirScalarsWhileAnotherThreadCollects()
    {
        using var x = ones(4);
        using var y = ones(4);
        bool stop = false;
        var collector = new Thread(() => { while (!Volatile.Read(ref stop)) { GC.Collect(); GC.WaitForPendingFinalizers(); } });
        collector.Start();
        int wrong = 0;
        try
        {
            for (int n = 0; n < 100_000; n++)
            {
                using var scope = NewDisposeScope();
                var z = x.Plus(y).Times(3.0).Minus(1.0).DividedBy(5.0);     // (1 + 1) * 3 - 1 = 5, / 5 = 1
                if (z[0].item<float>() != 1f) wrong++;
            }
        }
        finally
        {
            Volatile.Write(ref stop, true);
            collector.Join();
        }
        Assert.Equal(0, wrong);
    }
}
