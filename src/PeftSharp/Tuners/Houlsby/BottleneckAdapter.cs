using TorchSharp;
using TorchSharp.Modules;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Houlsby;

/// <summary>y = x + up(act(down(x))), with up zero-initialised so a fresh adapter is the identity.</summary>
internal sealed class BottleneckAdapter : ISublayerHook, IDisposable
{
    public Parameter DownWeight { get; }
    public Parameter DownBias { get; }
    public Parameter UpWeight { get; }
    public Parameter UpBias { get; }
    readonly string _act;
    /// <summary>Whether the adapter runs now (its adapter active, the model's adapters not disabled); off = the identity.</summary>
    readonly Func<bool> _runs;

    public BottleneckAdapter(long hidden, long bottleneck, string nonLinearity, ScalarType dtype, Device device, torch.Generator? g, Func<bool>? runs = null)
    {
        _runs = runs ?? (() => true);
        _act = nonLinearity switch
        {
            "relu" or "gelu" or "silu" or "tanh" => nonLinearity,
            _ => throw new ArgumentException($"non_linearity '{nonLinearity}' is not one of relu, gelu, silu, tanh"),
        };
        // Small init for down (as in the paper's near-identity init), zero for up.
        using (var noise = randn([bottleneck, hidden], dtype, device, generator: g))   // disposed, not left to the finalizer
            DownWeight = new Parameter(noise.Times(1e-2), requires_grad: true);
        DownBias = new Parameter(zeros(bottleneck, dtype, device), requires_grad: true);
        UpWeight = new Parameter(zeros(hidden, bottleneck, dtype, device), requires_grad: true);
        UpBias = new Parameter(zeros(hidden, dtype, device), requires_grad: true);
    }

    public Tensor Apply(Tensor x)
    {
        if (!_runs()) return x;
        using var scope = NewDisposeScope();
        var h = nn.functional.linear(x, DownWeight, DownBias);
        h = _act switch
        {
            "relu" => nn.functional.relu(h),
            "gelu" => nn.functional.gelu(h),
            "silu" => nn.functional.silu(h),
            _ => h.tanh(),
        };
        return x.Plus(nn.functional.linear(h, UpWeight, UpBias)).MoveToOuterDisposeScope();
    }

    public IEnumerable<(string Key, Parameter P)> NamedParameters()
    {
        yield return ("down.weight", DownWeight);
        yield return ("down.bias", DownBias);
        yield return ("up.weight", UpWeight);
        yield return ("up.bias", UpBias);
    }

    public void Dispose()
    {
        DownWeight.Dispose(); DownBias.Dispose(); UpWeight.Dispose(); UpBias.Dispose();
    }
}
