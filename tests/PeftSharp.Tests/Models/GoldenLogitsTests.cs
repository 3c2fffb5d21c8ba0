using PeftSharp.IO;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

public class GoldenLogitsTests
{
    [Fact]
    public void TinyLlamaReproducesGoldenLogits()
    {
        using var golden = new SafeTensorsFile(Path.Combine(TestPaths.TinyLlama, "golden.safetensors"));
        using var ids = golden.Load("input_ids");
        using var expected = golden.Load("logits");
        using var model = ModelLoader.Load(TestPaths.TinyLlama);
        using var _ = no_grad();
        using var logits = model.Forward(ids);
        Assert.Equal(expected.shape, logits.shape);
        double rel = TestPaths.RelativeError(logits, expected);
        Assert.True(rel <= 1e-5, $"relative error {rel}");
        Assert.True(TestPaths.MaxAbsError(logits, expected) <= 1e-3);
    }
}
