using System.Text.Json.Nodes;
using PeftSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>Result of <see cref="ModelQuantizer.QuantizeFolder"/>.</summary>
internal sealed record QuantizeReport(QuantizationInfo Info, double RelativeError, long OutputBytes, long LargestTensorFp32Bytes);

/// <summary>
/// Converts a Hugging Face model folder into a bnb-4bit folder, streaming: the header is computed from shapes,
/// then each tensor is read from disk (SafeTensorsFile.Load / CopyTo: pread, not the mapping, so input pages do
/// not count as resident), quantised and written before the next one is read. Dense tensors are copied in 1 MiB chunks.
/// </summary>
internal static class ModelQuantizer
{
    public static QuantizeReport QuantizeFolder(string modelDir, string outDir, Nf4Options options)
    {
        options.Validate();
        if (!Directory.Exists(modelDir)) throw new DirectoryNotFoundException($"{modelDir}: model folder not found");
        if (Path.GetFullPath(modelDir).TrimEnd('/') == Path.GetFullPath(outDir).TrimEnd('/'))
            throw new ArgumentException($"{outDir}: output folder must differ from the model folder");
        string configPath = Path.Combine(modelDir, "config.json");
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{modelDir}: no config.json");
        // Refuses what generate/inspect would refuse, before anything is written; its dtype is bnb_4bit_compute_dtype.
        string computeDtype = Models.ModelConfig.Load(configPath).TorchDtype;
        var config = JsonFile.ReadObject(configPath);
        if (config.ContainsKey("quantization_config")) throw new InvalidDataException($"{configPath}: the model is already quantised");

        using var reader = new CheckpointReader(modelDir);
        if (BnbCheckpoint.DetectOptions(reader) is not null) throw new InvalidDataException($"{modelDir}: the checkpoint already holds 4-bit weights");
        double errSq = 0, normSq = 0;
        long largest = 0;
        var entries = new List<SafeTensorEntry>();
        foreach (var name in reader.Names.Order(StringComparer.Ordinal))
        {
            var info = reader.Info(name);
            var file = reader.FileOf(name);
            largest = Math.Max(largest, info.ElementCount * 4);
            if (ShouldQuantize(name, info))
            {
                if (info.ElementCount % options.BlockSize != 0)
                    throw new InvalidDataException($"{modelDir}: tensor '{name}' [{string.Join(", ", info.Shape)}] has {info.ElementCount} elements, not a multiple of the block size {options.BlockSize}");
                var stored = SafeTensorDtype.ToScalarType(info.Dtype);
                entries.AddRange(BnbCheckpoint.Entries(name, info.Shape, options, SafeTensorDtype.TorchName(stored), () =>
                {
                    using var dense = file.Load(name);
                    FiniteValues.Require(dense, file.Path, name); // NaN absmax scales would poison the quant_state
                    var w = Nf4Weight.FromDense(dense, options, CPU, name);
                    var (e, n) = w.ErrorSums(dense);
                    errSq += e; normSq += n;
                    return w;
                }, owns: true));
            }
            else entries.Add(new SafeTensorEntry(name, info.Dtype, info.Shape, info.ByteLength, s => file.CopyTo(name, s)));
        }
        AtomicFile.WriteFolder(outDir, tmp =>
        {
            SafeTensorsWriter.Write(Path.Combine(tmp, "model.safetensors"), entries, new Dictionary<string, string> { ["format"] = "pt" });
            config["quantization_config"] = QuantizationConfig(options, computeDtype);
            AtomicFile.WriteAllText(Path.Combine(tmp, "config.json"), config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
            ModelFolderFiles.CopyNonWeightFiles(modelDir, tmp, "config.json");
        });
        var outInfo = QuantizationInfo.Describe(outDir);
        return new QuantizeReport(outInfo, normSq > 0 ? Math.Sqrt(errSq / normSq) : 0, new FileInfo(Path.Combine(outDir, "model.safetensors")).Length, largest);
    }

    /// <summary>Decoder Linear weights (2-D floats under model.layers.*); embeddings, norms and lm_head stay dense.</summary>
    static bool ShouldQuantize(string name, SafeTensorInfo info) =>
        name.EndsWith(".weight", StringComparison.Ordinal) && info.Shape.Length == 2 && info.Dtype is "F32" or "F16" or "BF16"
        && Nf4Quantizer.IsDecoderLinear(name[..^".weight".Length]);

    /// <summary>transformers' BitsAndBytesConfig.to_dict() for a 4-bit model.</summary>
    static JsonObject QuantizationConfig(Nf4Options o, string computeDtype) => new()
    {
        ["_load_in_4bit"] = true,
        ["_load_in_8bit"] = false,
        ["bnb_4bit_compute_dtype"] = computeDtype,
        ["bnb_4bit_quant_storage"] = "uint8",
        ["bnb_4bit_quant_type"] = Nf4Codes.Name(o.Type),
        ["bnb_4bit_use_double_quant"] = o.DoubleQuant,
        ["llm_int8_enable_fp32_cpu_offload"] = false,
        ["llm_int8_has_fp16_weight"] = false,
        ["llm_int8_skip_modules"] = null,
        ["llm_int8_threshold"] = 6.0,
        ["load_in_4bit"] = true,
        ["load_in_8bit"] = false,
        ["quant_method"] = "bitsandbytes",
    };
}
