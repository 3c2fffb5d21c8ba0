using PeftSharp.Models;
using PeftSharp.Tuners.Houlsby;
using TorchSharp.Modules;

namespace PeftSharp.Training.Methods;

/// <summary>Houlsby bottleneck adapters after every attention and MLP sub-layer; the base is frozen.</summary>
public sealed class HoulsbyTraining : ITrainingMethod
{
    readonly CausalLM _model;
    readonly HoulsbyConfig _config;
    readonly List<(string Name, Parameter P)> _params;

    public HoulsbyTraining(CausalLM model, HoulsbyConfig config, int seed)
    {
        _model = model;
        _config = config;
        foreach (var p in model.parameters()) p.requires_grad = false;
        _params = HoulsbyAdapters.Attach(model, config, seed);
    }

    public string Description =>
        $"Houlsby adapters (reduction {_config.ReductionFactor}, bottleneck {_config.Bottleneck(_model.Config.HiddenSize)}): " +
        $"{_params.Sum(p => p.P.numel()) / 1e6:F3}M trainable of {_model.ParameterCount() / 1e6:F2}M";

    public IEnumerable<(string Name, Parameter P)> TrainableParameters => _params;

    public void Save(string dir) => HoulsbyAdapters.Save(_model, _config, dir);
}
