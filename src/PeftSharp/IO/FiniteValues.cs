using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>
/// NaN/Inf checks on loaded tensors. One non-finite weight makes every output NaN (a server then answers "" with
/// finish_reason stop, a merge writes a NaN model), so adapters and quantisation refuse them, naming file and tensor.
/// </summary>
internal static class FiniteValues
{
    /// <summary>True when every element is finite (always for integer tensors).</summary>
    public static bool All(Tensor t)
    {
        if (!t.is_floating_point()) return true;
        using var scope = NewDisposeScope();
        return t.isfinite().all().item<bool>();
    }

    /// <summary>Throws <see cref="InvalidDataException"/> naming <paramref name="file"/> and <paramref name="tensor"/> unless all finite.</summary>
    public static void Require(Tensor t, string file, string tensor)
    {
        if (!All(t)) throw new InvalidDataException($"{file}: tensor '{tensor}' holds NaN or infinite values");
    }
}
