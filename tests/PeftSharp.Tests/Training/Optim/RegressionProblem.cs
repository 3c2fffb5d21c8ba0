using PeftSharp.Training.Optim;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training.Optim;

/// <summary>
/// A small deterministic regression y = W2 tanh(W1 x + b1) with one parameter large enough for 8-bit state
/// (W1: 12288 elements) and two small ones (b1, W2), used to drive optimisers step by step.
/// </summary>
internal sealed class RegressionProblem : IDisposable
{
    readonly Tensor _x, _y;
    public List<(string Name, Parameter Param)> Parameters { get; }

    public RegressionProblem(long seed = 1, int inDim = 128, int hidden = 96, int outDim = 16)
    {
        var gen = new Generator((ulong)seed);
        _x = randn([256, inDim], generator: gen);
        using var w1True = randn([hidden, inDim], generator: gen).Times(0.1);
        using var w2True = randn([outDim, hidden], generator: gen).Times(0.3);
        using (no_grad())
        using (var h = tanh(_x.matmul(w1True.t())))
            _y = h.matmul(w2True.t());
        Parameters =
        [
            ("layer.w1", new Parameter(randn([hidden, inDim], generator: gen).Times(0.05))),
            ("layer.b1", new Parameter(zeros(hidden))),
            ("head.w2", new Parameter(randn([outDim, hidden], generator: gen).Times(0.05))),
        ];
    }

    /// <summary>An independent copy of the current parameter values (same names).</summary>
    public List<(string Name, Parameter Param)> CloneParameters() =>
        Parameters.Select(p => (p.Name, new Parameter(p.Param.detach().clone()))).ToList();

    /// <summary>Sets fresh gradients of the loss on <paramref name="ps"/> and returns the loss.</summary>
    public double Backward(IReadOnlyList<(string Name, Parameter Param)> ps)
    {
        using var scope = NewDisposeScope();
        foreach (var (_, p) in ps)
        {
            using var g = p.grad;
            g?.zero_();
        }
        var h = tanh(_x.matmul(ps[0].Param.t()).Plus(ps[1].Param));
        var loss = (h.matmul(ps[2].Param.t()) - _y).square().mean();
        loss.backward();
        return loss.item<float>();
    }

    public double Loss(IReadOnlyList<(string Name, Parameter Param)> ps)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var h = tanh(_x.matmul(ps[0].Param.t()).Plus(ps[1].Param));
        return (h.matmul(ps[2].Param.t()) - _y).square().mean().item<float>();
    }

    /// <summary>Runs <paramref name="steps"/> optimiser steps on <paramref name="ps"/>.</summary>
    public void Train(IOptimizer opt, IReadOnlyList<(string Name, Parameter Param)> ps, int steps)
    {
        for (int i = 0; i < steps; i++)
        {
            Backward(ps);
            opt.Step();
        }
    }

    public static void AssertBitIdentical(IReadOnlyList<(string Name, Parameter Param)> a, IReadOnlyList<(string Name, Parameter Param)> b)
    {
        for (int i = 0; i < a.Count; i++)
            Assert.True(a[i].Param.bytes.SequenceEqual(b[i].Param.bytes), $"parameter '{a[i].Name}' differs");
    }

    public void Dispose()
    {
        _x.Dispose();
        _y.Dispose();
        foreach (var (_, p) in Parameters) p.Dispose();
    }
}
