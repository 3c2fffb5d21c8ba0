using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Training.Methods;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Support;

/// <summary>
/// The model and fp32 LoRA a `train --compute-dtype` run builds (MethodFactory, on a model folder), and one training
/// step's loss and adapter gradients: the bf16 kernel tests compare these across dtypes and kernel paths.
/// </summary>
internal static class MixedPrecisionLora
{
    public static (CausalLM Model, LoraAdapter Lora) Build(string dir, ScalarType dtype, string targets)
    {
        var o = new MethodOptions { Method = "lora", Rank = 4, Alpha = 8, Targets = targets, Init = LoraInit.False };
        var (model, _) = MethodFactory.Create(dir, o, TextTokenizer.Load(TestPaths.TinyLlama), CPU, dtype, seed: 2);
        model.train();
        return (model, LoraModel.Of(model).Get("default"));
    }

    /// <summary>Mean next-token loss and the adapters' A and B gradients (clones outside any dispose scope).</summary>
    public static (float Loss, Tensor[] Grads) Step(CausalLM model, LoraAdapter lora, Tensor ids)
    {
        using var scope = NewDisposeScope();
        foreach (var (_, l) in lora.Layers) { l.A.grad = null; l.B.grad = null; }
        var loss = CausalLmLoss.Sum(model.Forward(ids), ids).DividedBy(ids.numel() - ids.shape[0]);
        loss.backward();
        var grads = lora.Layers.Values.SelectMany(l => new[] { l.A.grad!.clone(), l.B.grad!.clone() }).Select(g => g.DetachFromDisposeScope()).ToArray();
        return (loss.item<float>(), grads);
    }
}
