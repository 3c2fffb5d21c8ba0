using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

public class TorchSharpRuntimeTests
{
    [Fact]
    public void NativeLibraryLoadsAndRunsBackward()
    {
        using var x = tensor(new float[] { 1, 2, 3 }, requires_grad: true);
        using var y = (x * x).sum();
        y.backward();
        Assert.Equal(new float[] { 2, 4, 6 }, x.grad!.data<float>().ToArray());
    }
}
