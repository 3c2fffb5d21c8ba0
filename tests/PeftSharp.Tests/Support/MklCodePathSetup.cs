using System.Runtime.CompilerServices;

namespace PeftSharp.Tests.Support;

/// <summary>
/// The whole test process runs on the MKL code path users get (Kernels/MklCodePath): settled before any test's first
/// matmul, not by whichever test happens to build a model first.
/// </summary>
static class MklCodePathSetup
{
#pragma warning disable CA2255 // a test assembly's one-time environment setup
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() => PeftSharp.Kernels.MklCodePath.Ensure();
}
