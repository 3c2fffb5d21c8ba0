using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Houlsby;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.PromptTuning;
using static TorchSharp.torch;

namespace PeftSharp.Training.Methods;

/// <summary>Loads the base the way a method needs it (dense or NF4) and attaches the method's trainable parts.</summary>
internal static class MethodFactory
{
    public static (CausalLM Model, ITrainingMethod Method) Create(string modelDir, MethodOptions o, TextTokenizer tokenizer, Device device,
        ScalarType dtype = ScalarType.Float32, int seed = 0)
    {
        o.Validate();
        if (dtype is ScalarType.BFloat16 or ScalarType.Float16) ComputeDtype.Check(ComputeDtype.Name(dtype), o.Method);   // the LoRA family only (fp32 adapters)
        var load = new LoadOptions
        {
            Dtype = dtype,
            Device = device,
            Quantizer = o.IsQuantized ? new Nf4Quantizer(new Nf4Options(o.BlockSize, o.DoubleQuant)) : null,
        };
        var model = ModelLoader.Load(modelDir, load);
        // Mixed precision computes the training target's logit in fp32 (see ComputeDtype).
        model.MixedPrecisionTraining = dtype is ScalarType.BFloat16 or ScalarType.Float16;
        try
        {
            return (model, Attach(model, modelDir, o, tokenizer, seed));
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The refusals <see cref="Attach"/> (dense LoRA/DoRA) and <see cref="FullFineTuning"/> make for a checkpoint stored in
    /// 4 bit, made from the checkpoint's header alone, so `peft train` can refuse before it loads data or prints the plan
    /// of a run that will not start.
    /// </summary>
    public static void RefuseQuantisedCheckpoint(string modelDir, MethodOptions o)
    {
        bool needsDense = (o.IsLora && !o.IsQuantized) || o.Method == "full";
        // A GGUF base (the file, or the folder made from it) has no safetensors: it loads dense.
        if (!needsDense || IO.Gguf.GgufModelSource.IsGguf(modelDir) || !Directory.Exists(modelDir) || IO.Gguf.GgufModelSource.FileOf(modelDir) is not null) return;
        using var reader = new IO.CheckpointReader(modelDir);
        if (QuantizedCheckpoints.Detect(reader) is not { } stored) return;
        throw o.Method == "full" ? FullFineTuning.NeedsDense(stored.Scheme) : AlreadyQuantised(o, stored.Scheme);
    }

    static ArgumentException AlreadyQuantised(MethodOptions o, string scheme) =>
        new($"--method {o.Method}: the model is already quantised ({scheme}); use qlora or qdora");

    public static ITrainingMethod Attach(CausalLM model, string modelDir, MethodOptions o, TextTokenizer tokenizer, int seed)
    {
        if (o.IsLora && model.QuantizationScheme != "none" && !o.IsQuantized) throw AlreadyQuantised(o, model.QuantizationScheme);
        if (o.Method == "full") return new FullFineTuning(model, baseFolder: modelDir);
        var config = ConfigFor(o, modelDir);
        // Every adapter method attaches through the registry; the run's adapter is PEFT's "default".
        var adapter = PeftMethods.ForConfig(config).Attach(model, config, "default", new AttachOptions { Seed = seed, Encode = text => tokenizer.Encode(text, addSpecialTokens: true), BaseModelNameOrPath = RecordedBaseName(modelDir) });
        adapter.Active = true;
        // A 16-bit load of a dense base records the checkpoint's fp32 fingerprint: the fp32 adapter then loads on the base
        // as generate/eval/merge load it (fp32), with or without the same --compute-dtype.
        if (adapter is LoraPeftAdapter lora && model.Dtype != ScalarType.Float32 && model.QuantizationScheme == "none")
            lora.RecordedBase = IO.BaseFingerprint.OfCheckpointInFp32(modelDir, model, lora.Adapter.Layers.Keys);
        return new AdapterTraining(model, adapter, Label(o, config, model));
    }

    /// <summary>The adapter config a run's method options describe (LoRA family, Houlsby or prompt tuning).</summary>
    public static IPeftConfig ConfigFor(MethodOptions o, string baseModel) => o.Method switch
    {
        "adapter" => o.Houlsby,
        "prompt" => new PromptTuningConfig
        {
            NumVirtualTokens = o.VirtualTokens,
            InitText = o.PromptInitText,
            Init = o.PromptInit,
        },
        _ => LoraConfigFor(o, baseModel),
    };

    static string Label(MethodOptions o, IPeftConfig config, CausalLM model) => config switch
    {
        LoraConfig c => (o.Method switch { "dora" => "DoRA", "qlora" => "QLoRA", "qdora" => "QDoRA", _ => "LoRA" })
            + (o.IsQuantized ? $" ({model.QuantizationScheme})" : "") + $" r={c.R} alpha={c.LoraAlpha} on {LoraInjector.Targets(model, c).Count} modules",
        HoulsbyConfig h => $"Houlsby adapters (reduction {h.ReductionFactor}, bottleneck {h.Bottleneck(model.Config.HiddenSize)})",
        PromptTuningConfig p => $"prompt tuning ({p.NumVirtualTokens} virtual tokens)",
        _ => config.PeftType,
    };

    public static LoraConfig LoraConfigFor(MethodOptions o, string baseModel)
    {
        string t = o.Targets.Trim();
        bool regex = t.StartsWith("regex:", StringComparison.Ordinal);
        return new LoraConfig
        {
            R = o.Rank,
            LoraAlpha = o.Alpha,
            RankPattern = o.RankPattern,
            AlphaPattern = o.AlphaPattern,
            LayersToTransform = o.LayersToTransform,
            LoraDropout = o.Dropout,
            TargetModules = t == "all-linear" || regex ? null : t.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            TargetModulesRegex = t == "all-linear" ? "all-linear" : regex ? t["regex:".Length..] : null,
            ExcludeModules = o.Exclude?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            UseRslora = o.UseRslora,
            UseDora = o.Method is "dora" or "qdora",
            InitLoraWeights = o.Init,
            BaseModelNameOrPath = RecordedBaseName(baseModel),
            // PEFT's revision is the base's Hub revision: AutoPeftModelForCausalLM loads base_model_name_or_path at it
            // (from_pretrained(..., revision=config.revision)); without it a base trained on at ORG/NAME@REV, or on a
            // main that has moved since, is silently loaded at today's main. The snapshot folder names the commit.
            Revision = Hub.RepoId.OfSnapshotFolder(baseModel)?.Revision,
        };
    }

    /// <summary>
    /// The base_model_name_or_path an adapter records (every method), as PEFT records model.name_or_path (what was passed to
    /// from_pretrained; AutoPeftModelForCausalLM and `peft plan ADAPTER` load the base back from it): a model from the
    /// Hub cache by its repo id (the snapshot folder's name would be a commit hash), a GGUF by the file it was read from
    /// (the folder standing for it is a cache entry), a local folder by the path as given: a relative path stays
    /// relative, found again from the same working directory as PEFT finds it. (It used to be the folder's bare name,
    /// which nothing could find again, and which a folder of that name in another working directory would match.)
    /// </summary>
    static string RecordedBaseName(string modelDir) =>
        Hub.RepoId.OfSnapshotFolder(modelDir)?.Id ?? IO.Gguf.GgufModelSource.FileOf(modelDir) ?? modelDir;
}
