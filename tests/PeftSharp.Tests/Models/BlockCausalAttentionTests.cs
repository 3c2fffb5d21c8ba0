using PeftSharp.Models;
using PeftSharp.Tuners.Lora;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>
/// The block-causal attention of the training forward (no cache, no padding mask, fp32, short sequences) against the
/// SDPA path the same model takes when given an all-ones attention mask: logits and LoRA gradients, through
/// <see cref="PeftModel.Forward"/> as users call it. The profiler says which path each forward took.
/// </summary>
public class BlockCausalAttentionTests
{
    const string Block = "attention scores (block-causal)", Sdpa = "attention scores (sdpa)";

    static PeftModel LoraModel(ScalarType dtype)
    {
        var model = PeftModel.FromPretrained(TestPaths.TinyLlama, options: new PeftModelOptions { Dtype = dtype });   // GQA: 4 heads, 2 kv heads, head_dim 16
        model.AddAdapter("a", new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"], InitLoraWeights = LoraInit.False }, seed: 3);
        return model;
    }

    /// <summary>Logits, the LoRA gradients of a loss on them, and the attention paths the forward took.</summary>
    static (Tensor Logits, Tensor[] Grads, string[] Paths) Run(PeftModel model, Tensor ids, Tensor? mask)
    {
        var lora = model.GetAdapter("a").NamedParameters().Select(p => p.Param).ToArray();
        foreach (var p in lora) { p.grad?.Dispose(); p.grad = null; }
        var profiler = new ForwardProfiler();
        ForwardProfiler.Current = profiler;
        Tensor logits;
        try
        {
            using var scope = NewDisposeScope();
            logits = model.Forward(ids, mask);
            using var weights = linspace(-1, 1, logits.numel(), logits.dtype).view(logits.shape);
            (logits.to_type(ScalarType.Float32) * weights.to_type(ScalarType.Float32)).sum().backward();
            logits = logits.to_type(ScalarType.Float32).detach().MoveToOuterDisposeScope();
        }
        finally { ForwardProfiler.Current = null; }
        return (logits, lora.Select(p => p.grad!.to_type(ScalarType.Float32).clone()).ToArray(),
            profiler.Totals.Keys.Where(k => k.StartsWith("attention scores")).ToArray());
    }

    [Theory]
    [InlineData(40)]   // four blocks of 10 queries
    [InlineData(37)]   // ragged: 10, 10, 10, 7
    public void Fp32LogitsAndLoraGradientsMatchTheSdpaPath(int t)
    {
        using var model = LoraModel(ScalarType.Float32);
        using var ids = randint(0, 260, [2, t], generator: new Generator(7));
        using var ones = torch.ones(2, t, ScalarType.Int64);
        var (fast, fastGrads, fastPaths) = Run(model, ids, null);
        var (sdpa, sdpaGrads, sdpaPaths) = Run(model, ids, ones);
        Assert.Equal([Block], fastPaths);
        Assert.Equal([Sdpa], sdpaPaths);
        Assert.True(TestPaths.RelativeError(fast, sdpa) <= 1e-6, $"logits differ: {TestPaths.RelativeError(fast, sdpa)}");
        Assert.True(fastGrads.Length >= 16);   // A and B of four projections in two layers
        for (int i = 0; i < fastGrads.Length; i++)
            Assert.True(TestPaths.RelativeError(fastGrads[i], sdpaGrads[i]) <= 1e-5, $"gradient {i} differs: {TestPaths.RelativeError(fastGrads[i], sdpaGrads[i])}");
    }

    [Fact]
    public void Bf16KeepsSdpaAndLongSequencesToo()
    {
        using (var bf16 = LoraModel(ScalarType.BFloat16))
        using (var ids = randint(0, 260, [2, 40], generator: new Generator(7)))
            Assert.Equal([Sdpa], Run(bf16, ids, null).Paths);
        using var fp32 = LoraModel(ScalarType.Float32);
        using var longIds = randint(0, 260, [1, 65], generator: new Generator(7));   // past 4 x head_dim: probabilities would grow as T^2
        Assert.Equal([Sdpa], Run(fp32, longIds, null).Paths);
    }

    [Fact]
    public void TwentyTrainingStepsKeepTheLiveTensorCountFlat()
    {
        using var model = LoraModel(ScalarType.Float32);
        using var ids = randint(0, 260, [2, 40], generator: new Generator(7));
        long Step()
        {
            using (var scope = NewDisposeScope())
                nn.functional.cross_entropy(model.Forward(ids).view(-1, 260), ids.view(-1)).backward();
            foreach (var (_, p) in model.GetAdapter("a").NamedParameters()) { p.grad?.Dispose(); p.grad = null; }
            return DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        }
        Step(); Step();
        long baseline = Step();
        for (int i = 0; i < 20; i++) Step();
        Assert.Equal(baseline, Step());
    }
}
