using PeftSharp.IO;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>Turns Linear weights into <see cref="IQuantizedWeight"/>s while a model loads.</summary>
internal interface IWeightQuantizer
{
    /// <summary>Scheme name recorded in fingerprints and configs (e.g. "nf4-b64-dq").</summary>
    string Scheme { get; }
    /// <summary>Which Linear modules to quantise (bitsandbytes keeps lm_head in 16 bit).</summary>
    bool ShouldQuantize(string modulePath);
    /// <summary>Quantises a dense [out, in] weight (any float dtype, CPU).</summary>
    IQuantizedWeight Quantize(Tensor dense, Device device);
    /// <summary>Reads an already quantised weight from the checkpoint, or null when it is stored dense.</summary>
    IQuantizedWeight? TryLoad(CheckpointReader reader, string weightName, long[] shape, Device device);
    /// <summary>Checkpoint keys that belong to a quantised weight (so the loader does not call them unexpected).</summary>
    bool IsQuantStateKey(string key);
}
