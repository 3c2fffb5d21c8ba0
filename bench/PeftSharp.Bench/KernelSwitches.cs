using PeftSharp.Kernels;

namespace PeftSharp.Bench;

/// <summary>The C# kernels' per-thread Off() switches by name, for benches that compare a step with and without them.</summary>
internal static class KernelSwitches
{
    /// <summary>Names a --kernels-off style flag takes.</summary>
    public const string Names = "swiglu, attention, rmsnorm, loss or packed";

    /// <summary>The comma-separated <paramref name="list"/> of a flag, checked against <see cref="Names"/> (the flag named in the error).</summary>
    public static string[] Parse(string flag, string list)
    {
        var names = list.Split(',', StringSplitOptions.RemoveEmptyEntries);
        foreach (var k in names)
            if (k is not ("swiglu" or "attention" or "rmsnorm" or "loss" or "packed")) throw new ArgumentException($"--{flag} {k}: expected {Names}");
        return names;
    }

    /// <summary>Turns the named kernels off on this thread until disposed.</summary>
    public static IDisposable Off(IEnumerable<string> names) => new Disposables(names.Select(k => k switch
    {
        "swiglu" => SwiGlu.Off(),
        "attention" => CausalAttention.Off(),
        "packed" => PackedLinear.Off(),
        "loss" => CrossEntropy.Off(),
        _ => RmsNormFunction.Off(),
    }).ToList());

    sealed class Disposables(List<IDisposable> items) : IDisposable
    {
        public void Dispose() { foreach (var d in items) d.Dispose(); }
    }
}
