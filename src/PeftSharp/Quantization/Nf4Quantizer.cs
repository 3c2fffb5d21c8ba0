using PeftSharp.IO;
using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// Quantises decoder Linear weights to NF4/FP4 while a model loads, or reads them from a bnb-4bit checkpoint.
/// Embeddings, norms and lm_head stay dense, as bitsandbytes keeps them.
/// Also holds the scalar reference path (quantise/dequantise) the fast kernels are checked against.
/// </summary>
internal sealed class Nf4Quantizer : IWeightQuantizer
{
    readonly Func<string, bool> _select;

    public Nf4Options Options { get; }
    public string Scheme => Options.Scheme;

    public Nf4Quantizer(Nf4Options? options = null, Func<string, bool>? select = null)
    {
        Options = options ?? new Nf4Options();
        Options.Validate();
        _select = select ?? IsDecoderLinear;
    }

    /// <summary>Every projection inside the decoder layers; never lm_head.</summary>
    public static bool IsDecoderLinear(string modulePath) => modulePath.StartsWith("model.layers.", StringComparison.Ordinal);

    public bool ShouldQuantize(string modulePath) => _select(modulePath);

    public IQuantizedWeight Quantize(Tensor dense, Device device) => Nf4Weight.FromDense(dense, Options, device);

    public IQuantizedWeight? TryLoad(CheckpointReader reader, string weightName, long[] shape, Device device) =>
        BnbCheckpoint.TryRead(reader, weightName, shape, device);

    public bool IsQuantStateKey(string key) => BnbCheckpoint.IsQuantStateKey(key);

    /// <summary>Reference quantiser: per block absmax, value * (1/absmax) rounded to a code, two codes per byte (high nibble first).</summary>
    public static (byte[] Packed, float[] Absmax) QuantizeReference(ReadOnlySpan<float> x, int blockSize, FourBitType type, string name = "tensor")
    {
        if (x.Length % blockSize != 0)
            throw new ArgumentException($"{name}: {x.Length} elements are not a multiple of the block size {blockSize}");
        int nb = x.Length / blockSize;
        var absmax = new float[nb];
        var packed = new byte[x.Length / 2];
        for (int b = 0; b < nb; b++)
        {
            var block = x.Slice(b * blockSize, blockSize);
            float m = 0;
            foreach (var v in block) m = MathF.Max(m, MathF.Abs(v));
            absmax[b] = m;
            // bnb multiplies by the reciprocal (not a division): keeps rounding identical to its kernel.
            float inv = 1f / m;
            for (int i = 0; i < blockSize; i += 2)
            {
                byte hi = Nf4Codes.Quantize(type, block[i] * inv), lo = Nf4Codes.Quantize(type, block[i + 1] * inv);
                packed[(b * blockSize + i) / 2] = (byte)(hi << 4 | lo);
            }
        }
        return (packed, absmax);
    }

    /// <summary>Reference dequantiser: code[nibble] * absmax[block], in float32.</summary>
    public static float[] DequantizeReference(ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, int blockSize, FourBitType type)
    {
        var code = Nf4Codes.Table(type);
        var r = new float[packed.Length * 2];
        for (int i = 0; i < r.Length; i++)
        {
            int q = (i & 1) == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 15;
            r[i] = code[q] * absmax[i / blockSize];
        }
        return r;
    }
}
