using System.Runtime.CompilerServices;

namespace PeftSharp.Tests.Support;

static class GgufTestCache
{
    /// <summary>
    /// The model folders `--model FILE.gguf` makes (GgufModelSource) go under the tests' temp area, not the user's
    /// ~/.cache: every test's GGUF is a new temp file, so each run would leave new entries there (the run root goes at exit).
    /// </summary>
#pragma warning disable CA2255 // a test assembly's one-time environment setup
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init()
    {
        if (Environment.GetEnvironmentVariable("PEFTSHARP_GGUF_CACHE") is null or "")
            Environment.SetEnvironmentVariable("PEFTSHARP_GGUF_CACHE", Path.Combine(TestPaths.RunRoot, "gguf-cache"));
    }
}
