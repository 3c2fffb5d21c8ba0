namespace PeftSharp.Tests.Support;

/// <summary>
/// Shared into all three test assemblies (with the rest of Support), so each scans itself: no code outside a test
/// method hands libtorch a TorchSharp Scalar nobody holds (src/PeftSharp/Kernels/ScalarArgs.cs says why that can fail).
/// Helpers, fixtures and models built for many tests run inside many tests at once, beside threads that collect, so an
/// unheld Scalar there is a flaky CI run waiting to happen. Sites inside a single test method run once per case and are
/// not listed; <c>ScalarArgsTests.Samples</c> makes them on purpose (the scan's own check).
/// </summary>
public class SharedTestCodeHoldsItsScalars
{
    [Fact]
    public void NoHelperOutsideATestMethodMakesAnUnheldScalar()
    {
        var assembly = typeof(SharedTestCodeHoldsItsScalars).Assembly;
        var found = ScalarTemporaries.In(assembly.Location, "PeftSharp.Tests.Kernels.ScalarArgsTests/Samples")
            .Where(site => !ScalarTemporaries.IsInTestMethod(assembly, site)).ToList();
        Assert.True(found.Count == 0, "use ScalarArgs (or a using Scalar) at:\n" + string.Join("\n", found));
    }

    [Fact]
    public void TheScanTellsTestMethodsFromHelpers()
    {
        var assembly = typeof(SharedTestCodeHoldsItsScalars).Assembly;
        Assert.True(ScalarTemporaries.IsInTestMethod(assembly, $"{typeof(SharedTestCodeHoldsItsScalars).FullName}.{nameof(NoHelperOutsideATestMethodMakesAnUnheldScalar)}: call"));
        Assert.True(ScalarTemporaries.IsInTestMethod(assembly, $"{typeof(SharedTestCodeHoldsItsScalars).FullName}/<>c__DisplayClass0_0.<{nameof(TheScanTellsTestMethodsFromHelpers)}>g__Local|0: call"));
        Assert.False(ScalarTemporaries.IsInTestMethod(assembly, $"{typeof(ScalarTemporaries).FullName}.{nameof(ScalarTemporaries.In)}: call"));
        Assert.False(ScalarTemporaries.IsInTestMethod(assembly, $"{typeof(ScalarTemporaries).FullName}/<>c.<{nameof(ScalarTemporaries.In)}>b__1_0: call"));
    }
}
