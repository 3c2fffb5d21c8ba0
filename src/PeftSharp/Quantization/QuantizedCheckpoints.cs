using PeftSharp.IO;
using PeftSharp.Models;

namespace PeftSharp.Quantization;

/// <summary>
/// The pre-quantised checkpoint formats <see cref="Models.ModelLoader"/> reads, asked in turn: a fixed list here, not a
/// registry other code fills at start-up (bitsandbytes 4-bit is the only one today; a new format is one more line).
/// </summary>
internal static class QuantizedCheckpoints
{
    static readonly Func<CheckpointReader, IWeightQuantizer?>[] Detectors = [DetectBnb4bit];

    /// <summary>The quantiser that reads <paramref name="reader"/>'s stored low-bit weights, or null for a dense checkpoint.</summary>
    public static IWeightQuantizer? Detect(CheckpointReader reader) => Detectors.Select(d => d(reader)).FirstOrDefault(q => q is not null);

    /// <summary>bitsandbytes NF4/FP4: a quantiser that reads exactly the weights the checkpoint stores in 4 bit.</summary>
    static IWeightQuantizer? DetectBnb4bit(CheckpointReader reader) =>
        BnbCheckpoint.DetectOptions(reader) is { } options
            ? new Nf4Quantizer(options, module => BnbCheckpoint.LooksQuantized(reader, module + ".weight"))
            : null;
}
