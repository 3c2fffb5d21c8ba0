using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>LoRA/DoRA over a quantised base (QLoRA/QDoRA) go through IQuantizedWeight, never a dense weight field.</summary>
public class QuantizedBaseTests
{
    /// <summary>A stand-in quantiser: weights rounded to a 1/32 grid, stored as such.</summary>
    sealed class GridQuantizer : IWeightQuantizer
    {
        public string Scheme => "grid32";
        public bool ShouldQuantize(string modulePath) => modulePath != "lm_head";
        public IQuantizedWeight Quantize(Tensor dense, Device device) => new Grid(ScalarArgs.With(32L, s => dense.to(ScalarType.Float32, device).mul(s).round_().div_(s)));
        public IQuantizedWeight? TryLoad(CheckpointReader reader, string weightName, long[] shape, Device device) => null;
        public bool IsQuantStateKey(string key) => false;
    }

    sealed class Grid(Tensor w) : IQuantizedWeight
    {
        public long[] Shape => w.shape;
        public string Scheme => "grid32";
        public Device Device => w.device;
        public long StorageBytes => w.numel() * 4;
        public Tensor Dequantize(ScalarType dtype, Device device) => w.to(dtype, device, copy: true);
        public Tensor Linear(Tensor x, ScalarType dtype) => nn.functional.linear(x, w.to_type(dtype));
        public PeftSharp.Quantization.DequantReuse? Reuse { get; set; }
        public void Dispose() => w.Dispose();
    }

    [Theory]
    [InlineData("grid32")]
    [InlineData("nf4")]
    public void QDoraEqualsDoraOnTheDequantisedDenseBase(string scheme)
    {
        IWeightQuantizer quantizer = scheme == "nf4" ? new PeftSharp.Quantization.Nf4Quantizer() : new GridQuantizer();
        using var q = ModelLoader.Load(TestPaths.TinyLlama, new LoadOptions { Quantizer = quantizer });
        Assert.Null(q.Layers[0].self_attn.q_proj.weight);
        using var dense = ModelLoader.Load(TestPaths.TinyLlama);
        using (no_grad())
            foreach (var (lq, ld) in q.Linears().Zip(dense.Linears()).Where(p => p.First.Quantized is not null))
                using (var w = lq.Quantized!.Dequantize(ScalarType.Float32, CPU)) ld.weight!.copy_(w);

        var cfg = new LoraConfig { R = 4, UseDora = true, TargetModules = ["q_proj", "down_proj"], InitLoraWeights = LoraInit.False };
        var aq = LoraInjector.Inject(q, cfg, "default", 4);
        var ad = LoraInjector.Inject(dense, cfg, "default", 4);
        LoraReferenceTests.PerturbMagnitudes(aq);
        LoraReferenceTests.PerturbMagnitudes(ad);
        using var _ = no_grad();
        using var ids = tensor(new long[] { 4, 8, 15, 16, 23, 42 }).unsqueeze(0);
        using var lq2 = q.Forward(ids);
        using var ld2 = dense.Forward(ids);
        Assert.True(TestPaths.RelativeError(lq2, ld2) <= 1e-5);
        Assert.Throws<InvalidOperationException>(() => LoraModel.Of(q).Merge("default"));
        using (enable_grad())
        {
            using var loss = q.Forward(ids).square().mean();
            loss.backward();
        }
        var l = aq.Layers["model.layers.1.mlp.down_proj"];
        Assert.True(l.A.grad!.abs().sum().item<float>() > 0 && l.Magnitude!.grad!.abs().sum().item<float>() > 0);

        // The fingerprint tells the quantised base from the dense one even with identical dequantised values.
        var paths = aq.Layers.Keys.ToList();
        var fq = BaseFingerprint.Compute(q, paths);
        var fd = BaseFingerprint.Compute(dense, paths);
        Assert.Equal(quantizer.Scheme, fq.Scheme);
        Assert.Contains(fq.Differences(fd), d => d.Contains("q_proj.weight differs"));
    }

    [Fact]
    public void Fp32AdapterOnBf16BaseStaysFp32()
    {
        using var model = ModelLoader.Load(TestPaths.TinyLlama, new LoadOptions { Dtype = ScalarType.BFloat16 });
        var adapter = PeftAdapterIO.Load(model, Path.Combine(TestPaths.TinyLlama, "adapters", "dora"));
        Assert.All(adapter.Parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));
        using var golden = new SafeTensorsFile(Path.Combine(TestPaths.TinyLlama, "golden.safetensors"));
        using var ids = golden.Load("input_ids");
        using var expected = golden.Load("logits_dora");
        using var _ = no_grad();
        using var logits = model.Forward(ids);
        Assert.Equal(ScalarType.BFloat16, logits.dtype);
        Assert.True(TestPaths.RelativeError(logits, expected) <= 3e-2);
    }
}
