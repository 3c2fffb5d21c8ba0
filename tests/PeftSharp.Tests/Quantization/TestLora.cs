using PeftSharp.Models;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

/// <summary>A minimal LoRA for these tests (the real one lives with the adapters): y + (x A^T) B^T.</summary>
sealed class TestLora : ILinearAdapter
{
    public Parameter A { get; }
    public Parameter B { get; }
    public string AdapterName => "test";

    public TestLora(TunableLinear layer, int r, bool zeroB, Generator? random = null)
    {
        A = new Parameter(randn([r, layer.InFeatures], generator: random).Times(0.1).DetachFromDisposeScope(), requires_grad: true);
        B = new Parameter((zeroB ? zeros(layer.OutFeatures, r) : randn([layer.OutFeatures, r], generator: random).Times(0.1)).DetachFromDisposeScope(), requires_grad: true);
    }

    /// <summary>The adapters' A and B gradients as clones outside any dispose scope, cleared on the adapters for the next step.</summary>
    public static Tensor[] TakeGrads(IEnumerable<TestLora> adapters)
    {
        var grads = adapters.SelectMany(a => new[] { a.A.grad!.clone(), a.B.grad!.clone() }).Select(g => g.DetachFromDisposeScope()).ToArray();
        foreach (var a in adapters) { a.A.grad = null; a.B.grad = null; }
        return grads;
    }

    /// <summary>LoRA r 4 on every decoder Linear, active alone. With <paramref name="seed"/> the weights come from a
    /// generator of their own, so twin models get the same adapters even while other tests (run in parallel) draw from
    /// libtorch's global generator between two manual_seed calls; without it, from the global generator.</summary>
    public static List<TestLora> Attach(CausalLM model, bool zeroB, ulong? seed = null)
    {
        var all = new List<TestLora>();
        using var random = seed is { } s ? new Generator(s) : null;
        foreach (var l in model.Linears().Where(l => l.ModulePath.StartsWith("model.layers.")))
        {
            var a = new TestLora(l, 4, zeroB, random);
            l.Adapters["test"] = a;
            all.Add(a);
        }
        model.State.Active.Clear();
        model.State.Active.Add(("test", 1.0));
        return all;
    }

    public Tensor Apply(Tensor x, Tensor baseOut, TunableLinear layer)
    {
        using var scope = NewDisposeScope();
        return baseOut.Plus(nn.functional.linear(nn.functional.linear(x, A), B)).MoveToOuterDisposeScope();
    }

    public IEnumerable<(string Key, Parameter Param)> NamedParameters() => [("lora_A.weight", A), ("lora_B.weight", B)];
    public Tensor MergedWeight(Tensor w) => w.Plus(B.matmul(A));
    public Tensor UnmergedWeight(Tensor w) => w - B.matmul(A);
    public void Dispose() { A.Dispose(); B.Dispose(); }
}
