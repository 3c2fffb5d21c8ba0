using PeftSharp.IO;
using PeftSharp.Models;

namespace PeftSharp.Quantization;

/// <summary>Registers the bnb-4bit checkpoint detector with <see cref="ModelLoader"/> (once).</summary>
internal static class QuantizationSetup
{
    static int _registered;

    public static void EnsureRegistered()
    {
        if (Interlocked.Exchange(ref _registered, 1) == 1) return;
        lock (ModelLoader.QuantizedCheckpointDetectors) ModelLoader.QuantizedCheckpointDetectors.Add(Detect);
    }

    /// <summary>A quantiser that reads exactly the weights the checkpoint stores in 4 bit.</summary>
    static IWeightQuantizer? Detect(CheckpointReader reader) =>
        BnbCheckpoint.DetectOptions(reader) is { } options
            ? new Nf4Quantizer(options, module => BnbCheckpoint.LooksQuantized(reader, module + ".weight"))
            : null;
}
