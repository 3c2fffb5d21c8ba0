using PeftSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

internal sealed record LoadOptions
{
    public ScalarType Dtype { get; init; } = ScalarType.Float32;
    public Device? Device { get; init; }
    /// <summary>When set, the Linear weights it selects are quantised while loading, one tensor at a time.</summary>
    public IWeightQuantizer? Quantizer { get; init; }
}

/// <summary>Loads a Hugging Face model folder (config.json + safetensors, single or sharded) into a <see cref="CausalLM"/>.</summary>
internal static class ModelLoader
{
    public static CausalLM Load(string folder, LoadOptions? options = null)
    {
        options ??= new LoadOptions();
        if (IO.Gguf.GgufModelSource.IsGguf(folder)) folder = IO.Gguf.GgufModelSource.Prepare(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: model folder not found");
        var config = ModelConfig.Load(folder);
        // A GGUF base (a folder made by GgufModelSource.Prepare) has its weights in the GGUF file, not in safetensors.
        string? gguf = IO.Gguf.GgufModelSource.FileOf(folder);
        using var reader = gguf is null ? new CheckpointReader(folder) : null;
        var quantizer = options.Quantizer ?? (reader is null ? null : Quantization.QuantizedCheckpoints.Detect(reader));
        var device = options.Device ?? CPU;
        var model = new CausalLM(config, options.Dtype, quantizer is null ? null : quantizer.ShouldQuantize);
        try
        {
            if (reader is null) IO.Gguf.GgufModelSource.LoadWeights(model, gguf!, quantizer, options.Dtype, device);
            else LoadWeights(model, reader, quantizer, options.Dtype, device);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        if (quantizer is not null) model.QuantizationScheme = quantizer.Scheme;
        return model;
    }

    static void LoadWeights(CausalLM model, CheckpointReader reader, IWeightQuantizer? quantizer, ScalarType dtype, Device device)
    {
        var used = new HashSet<string>(StringComparer.Ordinal);
        var missing = new List<string>();
        var nonFinite = new List<string>();
        void CheckFinite(Tensor t, string name) { if (!FiniteValues.All(t)) nonFinite.Add(name); }
        void RequireShape(string name, long[] expected)
        {
            var actual = reader.Info(name).Shape;
            if (!actual.SequenceEqual(expected))
                throw new InvalidDataException($"{reader.Folder}: tensor '{name}' has shape [{string.Join(", ", actual)}] but the config implies [{string.Join(", ", expected)}]");
        }
        using (no_grad())
        {
            if (device.type != DeviceType.CPU) model.to(device);
            foreach (var (name, p) in model.named_parameters())
            {
                if (!reader.Contains(name)) { missing.Add(name); continue; }
                RequireShape(name, p.shape);
                using var t = reader.Load(name, dtype, device);
                CheckFinite(t, name);
                p.copy_(t);
                used.Add(name);
            }
            foreach (var lin in model.Linears().Where(l => l.weight is null))
            {
                string wname = lin.ModulePath + ".weight";
                var shape = new[] { lin.OutFeatures, lin.InFeatures };
                var q = quantizer!.TryLoad(reader, wname, shape, device);
                if (q is null)
                {
                    if (!reader.Contains(wname)) { missing.Add(wname); continue; }
                    RequireShape(wname, shape);
                    // One dense tensor at a time: the whole fp32 model never exists during quantised loading.
                    using var dense = reader.Load(wname);
                    CheckFinite(dense, wname);
                    q = quantizer.Quantize(dense, device);
                }
                lin.SetQuantized(q);
                used.Add(wname);
            }
        }
        // A base is not ours to refuse (it may be deliberate), but silently NaN outputs are worse: say it once per load.
        if (nonFinite.Count > 0)
            PeftLogging.Warn($"{reader.Folder}: {nonFinite.Count} weight tensor(s) hold NaN or infinite values ({string.Join(", ", nonFinite.Take(4))}{(nonFinite.Count > 4 ? ", ..." : "")}); outputs will be NaN where they are used");
        if (missing.Count > 0)
            throw new InvalidDataException($"{reader.Folder}: checkpoint is missing {missing.Count} tensor(s): {string.Join(", ", missing.Take(8))}{(missing.Count > 8 ? ", ..." : "")}");
        var unexpected = reader.Names.Where(n => !used.Contains(n) && !Ignorable(n) && !(quantizer?.IsQuantStateKey(n) ?? false)).ToList();
        if (unexpected.Count > 0)
            throw new InvalidDataException($"{reader.Folder}: checkpoint has {unexpected.Count} tensor(s) this {model.Config.ModelType} model does not use: {string.Join(", ", unexpected.Take(8))}");
    }

    /// <summary>Buffers some exporters save that carry no weights.</summary>
    public static bool Ignorable(string name) => name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal)
        || (name == "lm_head.weight"); // a tied model may still ship a copy of the embedding as lm_head
}
