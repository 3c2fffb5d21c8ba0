using System.Text.Json;
using PeftSharp.IO;
using PeftSharp.Models;
using static TorchSharp.torch;
using TorchSharp.Modules;

namespace PeftSharp.Training;

/// <summary>
/// Full fine-tuning: every parameter of a dense model trains. Saves a Hugging Face model folder: config.json,
/// model.safetensors in the save dtype, and the base folder's other non-weight files (tokenizer_config.json with its
/// chat template and BOS/EOS flags, generation_config.json with its stop ids, special_tokens_map.json, ...:
/// <see cref="ModelFolderFiles"/>, as merge and quantize copy them) when the base folder is given, else the tokenizer
/// file when one is given. Without them the saved model rendered chats, added BOS and stopped differently from its base.
/// </summary>
internal sealed class FullFineTuning : ITrainingMethod
{
    readonly CausalLM _model;
    readonly string? _tokenizerJson;
    readonly string? _baseFolder;
    readonly ScalarType _saveDtype;

    /// <summary>The refusal of a quantised base (also made from the checkpoint alone, before `peft train` prints its plan).</summary>
    internal static InvalidOperationException NeedsDense(string scheme) => new($"full fine-tuning needs a dense model; this one is quantised ({scheme})");

    public FullFineTuning(CausalLM model, string? tokenizerJson = null, ScalarType saveDtype = ScalarType.Float32, string? baseFolder = null)
    {
        if (model.Linears().Any(l => l.Quantized is not null))
            throw NeedsDense(model.QuantizationScheme);
        _model = model;
        _tokenizerJson = tokenizerJson;
        _baseFolder = baseFolder;
        _saveDtype = saveDtype;
        foreach (var (_, p) in model.named_parameters()) p.requires_grad = true;
    }

    public string Description => $"full fine-tuning: {_model.ParameterCount() / 1e6:F2}M trainable parameters";

    public IEnumerable<(string Name, Parameter P)> TrainableParameters => _model.named_parameters().Select(p => (p.name, p.parameter));

    public void Save(string dir) => AtomicFile.WriteFolder(dir, tmp =>
    {
        var config = _model.Config.Raw.DeepClone().AsObject();
        Models.ModelConfig.SetDtype(config, SafeTensorDtype.TorchName(_saveDtype));
        File.WriteAllText(Path.Combine(tmp, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        using (var scope = NewDisposeScope())
        {
            var tensors = _model.named_parameters().Select(p => (p.name, p.parameter.detach().to(_saveDtype).cpu())).ToList();
            SafeTensorsWriter.Write(Path.Combine(tmp, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        }
        if (_baseFolder is not null) ModelFolderFiles.CopyNonWeightFiles(_baseFolder, tmp, "config.json");
        else if (_tokenizerJson is not null) File.Copy(_tokenizerJson, Path.Combine(tmp, "tokenizer.json"));
    });
}
