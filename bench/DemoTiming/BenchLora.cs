using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

/// <summary>
/// A bare LoRA (y + scale * x A^T B^T, B starting at zero) used only to check here that the demo task is learnable
/// by a low-rank adapter in the time budget; the library's LoRA lives in PeftSharp.Adapters.
/// </summary>
sealed class BenchLoraAdapter : ILinearAdapter
{
    readonly Parameter _a, _b;
    readonly double _scale;
    public string AdapterName => "bench";

    public BenchLoraAdapter(TunableLinear layer, int rank, double alpha)
    {
        _a = new Parameter(randn(rank, layer.InFeatures) / Math.Sqrt(layer.InFeatures), true);
        _b = new Parameter(zeros(layer.OutFeatures, rank), true);
        _scale = alpha / rank;
    }

    public Tensor Apply(Tensor x, Tensor baseOut, TunableLinear layer)
    {
        using var scope = NewDisposeScope();
        var delta = nn.functional.linear(nn.functional.linear(x, _a), _b) * _scale;
        return (baseOut + delta).MoveToOuterDisposeScope();
    }

    public IEnumerable<(string Key, Parameter Param)> NamedParameters() => [("lora_A.weight", _a), ("lora_B.weight", _b)];
    public Tensor MergedWeight(Tensor w) => throw new NotSupportedException();
    public Tensor UnmergedWeight(Tensor w) => throw new NotSupportedException();
    public void Dispose() { _a.Dispose(); _b.Dispose(); }
}

sealed class BenchLora : ITrainingMethod
{
    readonly List<(string, Parameter)> _params = new();

    public BenchLora(CausalLM model, int rank, double alpha)
    {
        foreach (var lin in model.Linears().Where(l => l.ModulePath != "lm_head"))
        {
            var a = new BenchLoraAdapter(lin, rank, alpha);
            lin.Adapters["bench"] = a;
            foreach (var (k, p) in a.NamedParameters()) _params.Add(($"{lin.ModulePath}.{k}", p));
        }
        model.State.Active.Add(("bench", 1.0));
        Description = $"bench LoRA r={rank} on all projections: {_params.Sum(p => p.Item2.numel()) / 1e6:F3}M trainable";
    }

    public string Description { get; }
    public IEnumerable<(string Name, Parameter P)> TrainableParameters => _params;
    public void Save(string dir) => AtomicFile.WriteFolder(dir, tmp => SafeTensorsWriter.Write(Path.Combine(tmp, "adapter_model.safetensors"), _params.Select(p => (p.Item1, (Tensor)p.Item2))));
}
