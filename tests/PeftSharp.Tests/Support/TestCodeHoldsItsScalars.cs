namespace PeftSharp.Tests.Support;

/// <summary>
/// Shared into all three test assemblies (with the rest of Support), so each scans itself: no test code hands libtorch
/// a TorchSharp Scalar nobody holds (src/PeftSharp/Kernels/ScalarArgs.cs says why that can fail: a collecting thread
/// finalizes the temporary while libtorch reads it; CI failed once that way). Tests run in parallel beside threads that
/// collect, so every such site is a rare flaky run; they use ScalarArgs and <see cref="TestScalars"/> instead.
/// <c>ScalarArgsTests</c> makes them on purpose: its samples check the scan, and its operator forms are what the
/// helpers are compared with.
/// </summary>
public class TestCodeHoldsItsScalars
{
    [Fact]
    public void NoTestCodeMakesAnUnheldScalar() =>
        ScalarTemporaries.AssertNone(typeof(TestCodeHoldsItsScalars).Assembly.Location, "PeftSharp.Tests.Kernels.ScalarArgsTests");
}
