using PeftSharp.Models;
using PeftSharp.Tuners;
using TorchSharp.Modules;

namespace PeftSharp.Training.Methods;

/// <summary>
/// Training one adapter of any registered method (<see cref="PeftMethods"/>): the base is frozen, the adapter's
/// parameters train under the keys its folder stores them by (checkpoints use the same names), and the result is
/// the adapter folder.
/// </summary>
internal sealed class AdapterTraining(CausalLM model, IPeftAdapter adapter, string label) : ITrainingMethod
{
    public IPeftAdapter Adapter => adapter;

    public string Description
    {
        get
        {
            long trainable = TrainableParameters.Sum(p => p.P.numel()), total = model.ParameterCount();
            return $"{label}: {trainable / 1e6:F3}M trainable of {total / 1e6:F2}M ({100.0 * trainable / total:F2}%)";
        }
    }

    public IEnumerable<(string Name, Parameter P)> TrainableParameters =>
        adapter.NamedParameters().Where(p => p.Param.requires_grad).Select(p => (p.Key, p.Param));

    public void Save(string dir) => adapter.Save(dir);
}
