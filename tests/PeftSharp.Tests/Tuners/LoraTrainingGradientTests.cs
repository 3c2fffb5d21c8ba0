using PeftSharp.Models;
using PeftSharp.Tests.Support;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>
/// The adapter gradients a LoRA training step computes (the model in train() mode: each adapted Linear is one
/// <see cref="LoraFunction"/> node with its own backward), in fp32 and in float64, against central finite differences
/// of the loss in float64 through the forward alone (no gradients recorded: the op chain), parameter by parameter along
/// random directions.
/// Qwen2 (q/k/v biases, grouped kv heads), LoRA on every Linear, so the input gradients that flow through one adapted
/// layer into the one below (g W + s (g B) A) are checked too.
/// </summary>
public class LoraTrainingGradientTests
{
    static readonly long[] Ids = [3, 17, 42, 8, 0, 25, 49, 11, 30, 5, 21, 2, 44, 9, 13, 37];

    static Tensor Loss(CausalLM model)
    {
        using var ids = tensor(Ids).view(2, -1);
        var logits = model.Forward(ids.narrow(1, 0, ids.shape[1] - 1));
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), ids.narrow(1, 1, ids.shape[1] - 1).reshape(-1));
    }

    [Fact]
    public void AdapterGradientsMatchFloat64FiniteDifferences()
    {
        string dir = RandomModel.Write(RandomModel.LlamaConfig(modelType: "qwen2", heads: 4, kvHeads: 2), seed: 5);
        using var m32 = ModelLoader.Load(dir);
        using var m64 = ModelLoader.Load(dir, new LoadOptions { Dtype = ScalarType.Float64 });
        var cfg = new LoraConfig { R = 4, LoraAlpha = 8, TargetModulesRegex = "all-linear", InitLoraWeights = LoraInit.False };
        var a32 = LoraInjector.Inject(m32, cfg, "default", seed: 11, ScalarType.Float32);
        var a64 = LoraInjector.Inject(m64, cfg, "default", seed: 11, ScalarType.Float64);
        using (no_grad())
        {
            using var g = new Generator(7);
            foreach (var (path, l) in a32.Layers)
            {
                // B larger than the test init's, so each adapter's share of the input gradient (s (g B) A) matters.
                using (var noise = randn(l.B.shape, generator: g)) l.B.add_(noise.mul_(0.5));
                a64.Layers[path].A.copy_(l.A);
                a64.Layers[path].B.copy_(l.B);
            }
        }
        m32.train();
        m64.train();

        // Both models' backward: fp32 as training runs it, float64 (the same node) to check its math tightly.
        foreach (var m in new[] { m32, m64 })
        {
            var before = LoraFunction.Calls;
            using (var scope = NewDisposeScope())
                Loss(m).backward();
            PeftSharp.Kernels.ReturnedGradients.Release();
            var after = LoraFunction.Calls;
            // Every adapted Linear took the fused node, forward and backward.
            Assert.Equal(a32.Layers.Count, after.Forward - before.Forward);
            Assert.Equal(a32.Layers.Count, after.Backward - before.Backward);
        }

        using var dirs = new Generator(9);
        // Small: the attention's softmax makes q/k's adapters curved enough that 1e-4 steps were 2% off.
        const double eps = 1e-6;
        foreach (var (path, l32) in a32.Layers)
        {
            var l64 = a64.Layers[path];
            foreach (var (p32, p64, name) in new[] { (l32.A, l64.A, "A"), (l32.B, l64.B, "B") })
            {
                using var scope = NewDisposeScope();
                using var _ = no_grad();
                var v = randn(p64.shape, ScalarType.Float64, generator: dirs);
                double f32 = (p32.grad!.to_type(ScalarType.Float64) * v).sum().item<double>();
                double f64 = (p64.grad! * v).sum().item<double>();
                p64.add_(v * eps);
                double plus = Loss(m64).item<double>();
                p64.add_(v * (-2 * eps));
                double minus = Loss(m64).item<double>();
                p64.add_(v * eps);
                double numeric = (plus - minus) / (2 * eps);
                Assert.True(Math.Abs(f64 - numeric) <= 1e-5 * Math.Abs(numeric) + 1e-8,
                    $"{path} {name}: float64 backward {f64:E8}, finite differences {numeric:E8}");
                // fp32: the whole model's rounding (small directional derivatives are differences of large terms).
                Assert.True(Math.Abs(f32 - numeric) <= 2e-3 * Math.Abs(numeric) + 1e-5,
                    $"{path} {name}: fp32 backward {f32:E6}, finite differences {numeric:E6}");
            }
        }
    }
}
