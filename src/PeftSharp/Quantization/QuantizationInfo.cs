using PeftSharp.IO;

namespace PeftSharp.Quantization;

/// <summary>
/// What `peft inspect` shows about a folder's quantisation. Bits per weight come from the bytes stored:
/// <see cref="BitsPerWeight"/> counts codes, absmax, nested absmax and the offset; <see cref="BitsPerWeightWithTables"/>
/// adds what the HF layout repeats per layer (the two code tables and the quant-state JSON).
/// </summary>
internal sealed record QuantizationInfo(string Scheme, int BlockSize, bool DoubleQuant, int QuantizedTensors, long QuantizedWeights,
    double BitsPerWeight, double BitsPerWeightWithTables)
{
    public static readonly QuantizationInfo None = new("none", 0, false, 0, 0, 0, 0);

    public static QuantizationInfo Describe(string modelDir)
    {
        using var reader = new CheckpointReader(modelDir);
        return Describe(reader);
    }

    public static QuantizationInfo Describe(CheckpointReader reader)
    {
        var options = BnbCheckpoint.DetectOptions(reader);
        if (options is null) return None;
        var states = reader.Names.Where(n => n.Contains(".quant_state.bitsandbytes__", StringComparison.Ordinal)).ToList();
        long weights = 0, scaleBytes = 0, tableBytes = 0;
        foreach (var key in states)
        {
            string w = key[..key.IndexOf(".quant_state.", StringComparison.Ordinal)];
            using var doc = System.Text.Json.JsonDocument.Parse(reader.FileOf(key).RawBytes(key).ToArray());
            weights += doc.RootElement.GetProperty("shape").EnumerateArray().Aggregate(1L, (a, e) => a * e.GetInt64());
            long Bytes(string name) => reader.Contains(name) ? reader.Info(name).ByteLength : 0;
            scaleBytes += Bytes(w) + Bytes(w + ".absmax") + Bytes(w + ".nested_absmax") + (reader.Contains(w + ".nested_absmax") ? 4 : 0);
            tableBytes += Bytes(w + ".quant_map") + Bytes(w + ".nested_quant_map") + Bytes(key);
        }
        return new QuantizationInfo(options.Scheme, options.BlockSize, options.DoubleQuant, states.Count, weights,
            scaleBytes * 8.0 / weights, (scaleBytes + tableBytes) * 8.0 / weights);
    }

    public override string ToString() => Scheme == "none" ? "none (dense weights)"
        : $"{Scheme}: {QuantizedTensors} tensors, {QuantizedWeights:N0} weights, {BitsPerWeight:F3} bits/weight ({BitsPerWeightWithTables:F3} with per-layer code tables)";
}
