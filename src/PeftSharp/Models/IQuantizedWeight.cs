using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// A frozen base weight stored in a compressed form (NF4 and friends). The dense weight exists only while a
/// layer computes: <see cref="Dequantize"/> builds it, the caller disposes it.
/// </summary>
internal interface IQuantizedWeight : IDisposable
{
    /// <summary>[out, in] of the dense weight.</summary>
    long[] Shape { get; }
    /// <summary>A short scheme name recorded in fingerprints, e.g. "nf4-b64-dq".</summary>
    string Scheme { get; }
    /// <summary>Where the compressed pieces live (and where the dense weight is built).</summary>
    Device Device { get; }
    /// <summary>Bytes of every stored piece (codes, scales, nested scales).</summary>
    long StorageBytes { get; }
    Tensor Dequantize(ScalarType dtype, Device device);
    /// <summary>
    /// Writes the dense weight into <paramref name="destination"/> (contiguous, <see cref="Shape"/>, its dtype and
    /// device) and returns true, or returns false where this weight has no such path (then use <see cref="Dequantize"/>).
    /// </summary>
    bool DequantizeInto(Tensor destination) => false;
    /// <summary>y = x W^T with the dequantised weight alive only during the call (and again in backward).</summary>
    Tensor Linear(Tensor x, ScalarType dtype);
    /// <summary>
    /// The owning model's pool of dense weights kept from a grad-recording forward for its backward
    /// (<see cref="PeftSharp.Quantization.DequantReuse"/>); null: reuse off. Shared by the model's quantised weights.
    /// </summary>
    PeftSharp.Quantization.DequantReuse? Reuse { get; set; }
}
