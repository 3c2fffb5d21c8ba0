using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>Adapters saved by Python PEFT reproduce PEFT's logits on the tiny model.</summary>
public class LoraGoldenTests
{
    [Theory]
    [InlineData("lora", "logits_lora")]
    [InlineData("dora", "logits_dora")]
    public void PeftAdapterReproducesPeftLogits(string adapter, string goldenKey)
    {
        using var golden = new SafeTensorsFile(Path.Combine(TestPaths.TinyLlama, "golden.safetensors"));
        using var ids = golden.Load("input_ids");
        using var expected = golden.Load(goldenKey);
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        PeftAdapterIO.Load(model, Path.Combine(TestPaths.TinyLlama, "adapters", adapter));
        using var _ = no_grad();
        using var logits = model.Forward(ids);
        double rel = TestPaths.RelativeError(logits, expected);
        Assert.True(rel <= 1e-5, $"relative error {rel}");
        // The adapter must matter: the base logits are far from the adapted ones.
        using var baseLogits = golden.Load("logits");
        Assert.True(TestPaths.RelativeError(baseLogits, expected) > 1e-4);
    }

    [Fact]
    public void DisablingAdaptersGivesBaseLogits()
    {
        using var golden = new SafeTensorsFile(Path.Combine(TestPaths.TinyLlama, "golden.safetensors"));
        using var ids = golden.Load("input_ids");
        using var expected = golden.Load("logits");
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        PeftAdapterIO.Load(model, Path.Combine(TestPaths.TinyLlama, "adapters", "dora"));
        LoraModel.Of(model).DisableAll();
        using var _ = no_grad();
        using var logits = model.Forward(ids);
        Assert.True(TestPaths.RelativeError(logits, expected) <= 1e-6);
    }
}
