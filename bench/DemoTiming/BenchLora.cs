using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;
using TorchSharp.Modules;

/// <summary>
/// The library's LoRA behind <see cref="ITrainingMethod"/>, just enough to time the demo task here; the real
/// training method (with QLoRA) is wired by the train command.
/// </summary>
sealed class BenchLora : ITrainingMethod
{
    readonly CausalLM _model;
    readonly LoraAdapter _adapter;

    public BenchLora(CausalLM model, int rank, double alpha)
    {
        _model = model;
        var cfg = new LoraConfig { R = rank, LoraAlpha = alpha, TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] };
        _adapter = LoraInjector.Inject(model, cfg);
    }

    public string Description => $"LoRA r={_adapter.Config.R} on all projections: {_adapter.ParameterCount / 1e6:F3}M trainable";
    public IEnumerable<(string Name, Parameter P)> TrainableParameters => _adapter.PeftNamedParameters().Where(p => p.Param.requires_grad);
    public void Save(string dir) => PeftAdapterIO.Save(_model, _adapter.Name, dir);
}
