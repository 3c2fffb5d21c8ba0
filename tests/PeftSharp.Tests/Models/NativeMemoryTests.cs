using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

public class NativeMemoryTests
{
    [Theory]
    [InlineData(32)]    // head_dim 8: SDPA
    [InlineData(128)]   // head_dim 32: the fused attention kernel (Kernels/CausalAttention) where AVX-512 is there
    public void ForwardBackwardTwentyTimesKeepsLiveTensorCountFlat(int hidden)
    {
        var dir = Support.RandomModel.Write(Support.RandomModel.LlamaConfig(hidden: hidden, layers: 2));
        using var model = ModelLoader.Load(dir);
        foreach (var p in model.parameters()) p.requires_grad = true;
        using var ids = randint(0, 50, [2, 12]);
        long Step()
        {
            using (var scope = NewDisposeScope())
            {
                var logits = model.Forward(ids);
                var loss = nn.functional.cross_entropy(logits.view(-1, 50), ids.view(-1));
                loss.backward();
            }
            foreach (var p in model.parameters()) { p.grad?.Dispose(); p.grad = null; }
            return DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        }
        Step(); Step();
        long baseline = Step();
        for (int i = 0; i < 20; i++) Step();
        Assert.Equal(baseline, Step());
    }
}
