using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training.Optim;

/// <summary>TorchSharp's own AdamW behind <see cref="IOptimizer"/> (fp32 moments, two per parameter element).</summary>
public sealed class TorchAdamW : IOptimizer, IDisposable
{
    readonly AdamW _opt;
    readonly long _elements;

    public TorchAdamW(IEnumerable<Parameter> parameters, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0.0)
    {
        var list = parameters.ToList();
        _elements = list.Sum(p => p.numel());
        _opt = optim.AdamW(list, lr, beta1, beta2, eps, weightDecay);
    }

    public double LearningRate
    {
        get => _opt.ParamGroups.First().LearningRate;
        set { foreach (var g in _opt.ParamGroups) g.LearningRate = value; }
    }

    public long StateBytes => _elements * 2 * sizeof(float);

    public void Step() => _opt.step();
    public void ZeroGrad() => _opt.zero_grad();
    public void SaveState(string path) => IO.AtomicFile.Write(path, fs => { using var w = new BinaryWriter(fs, System.Text.Encoding.UTF8, leaveOpen: true); _opt.save_state_dict(w); });
    public void LoadState(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: optimizer state not found", path);
        _opt.load_state_dict(path);
    }

    public void Dispose() => _opt.Dispose();
}
