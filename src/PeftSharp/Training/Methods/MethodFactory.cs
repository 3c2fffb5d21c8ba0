using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.PromptTuning;
using static TorchSharp.torch;

namespace PeftSharp.Training.Methods;

/// <summary>Loads the base the way a method needs it (dense or NF4) and attaches the method's trainable parts.</summary>
public static class MethodFactory
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

    public static ITrainingMethod Attach(CausalLM model, string modelDir, MethodOptions o, TextTokenizer tokenizer, int seed)
    {
        if (o.IsLora && model.QuantizationScheme != "none" && !o.IsQuantized)
            throw new ArgumentException($"--method {o.Method}: the model is already quantised ({model.QuantizationScheme}); use qlora or qdora");
        switch (o.Method)
        {
            case "full":
                return new FullFineTuning(model, Path.Combine(modelDir, "tokenizer.json"));
            case "adapter":
                return new HoulsbyTraining(model, o.Houlsby, seed);
            case "prompt":
                var init = o.PromptInit.ToLowerInvariant() switch
                {
                    "random" => PromptInit.Random,
                    "text" => PromptInit.Text,
                    "sample_vocab" or "vocab" => PromptInit.SampleVocab,
                    _ => throw new ArgumentException($"--prompt-init: '{o.PromptInit}' is not random, sample_vocab or text"),
                };
                var prompt = PromptEmbeddings.Create(model, new PromptTuningConfig { NumVirtualTokens = o.VirtualTokens, Init = init, InitText = o.PromptInitText },
                    text => tokenizer.Encode(text), seed);
                return new PromptTraining(model, prompt);
            default:
                var cfg = LoraConfigFor(o, modelDir);
                // Adapters train in fp32 even on a 16-bit base, as PEFT does.
                var adapter = LoraInjector.Inject(model, cfg, "default", seed, ScalarType.Float32);
                string label = o.Method switch { "dora" => "DoRA", "qlora" => "QLoRA", "qdora" => "QDoRA", _ => "LoRA" };
                if (o.IsQuantized) label += $" ({model.QuantizationScheme})";
                // A 16-bit load of a dense base records the checkpoint's fp32 fingerprint: the fp32 adapter then loads on the base
                // as generate/eval/merge load it (fp32), with or without the same --compute-dtype.
                var recorded = model.Dtype != ScalarType.Float32 && model.QuantizationScheme == "none"
                    ? IO.BaseFingerprint.OfCheckpointInFp32(modelDir, model, adapter.Layers.Keys) : null;
                return new LoraTraining(model, adapter, label, recorded);
        }
    }

    public static LoraConfig LoraConfigFor(MethodOptions o, string baseModel)
    {
        string t = o.Targets.Trim();
        bool regex = t.StartsWith("regex:", StringComparison.Ordinal);
        return new LoraConfig
        {
            R = o.Rank,
            LoraAlpha = o.Alpha,
            LoraDropout = o.Dropout,
            TargetModules = t == "all-linear" || regex ? null : t.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            TargetModulesRegex = t == "all-linear" ? "all-linear" : regex ? t["regex:".Length..] : null,
            ExcludeModules = o.Exclude?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            UseRslora = o.UseRslora,
            UseDora = o.Method is "dora" or "qdora",
            InitLoraWeights = o.Init,
            BaseModelNameOrPath = Path.GetFileName(Path.GetFullPath(baseModel).TrimEnd('/')),
        };
    }
}
