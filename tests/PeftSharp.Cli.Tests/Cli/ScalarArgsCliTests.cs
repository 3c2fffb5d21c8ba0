using PeftSharp.Tests.Support;

namespace PeftSharp.Tests.Cli;

/// <summary>The CLI and the server hand libtorch no Scalar that nobody holds (see src/PeftSharp/Kernels/ScalarArgs.cs
/// and PeftSharp.Tests' ScalarArgsTests, which also shows the scan finds such calls).</summary>
public class ScalarArgsCliTests
{
    [Theory]
    [InlineData("peft.dll")]
    [InlineData("PeftSharp.Serving.dll")]
    public void NoCallMakesAnUnheldScalar(string assembly)
    {
        var found = ScalarTemporaries.In(Path.Combine(AppContext.BaseDirectory, assembly));
        Assert.True(found.Count == 0, "use a using Scalar (or ScalarArgs in the library) at:\n" + string.Join("\n", found));
    }
}
