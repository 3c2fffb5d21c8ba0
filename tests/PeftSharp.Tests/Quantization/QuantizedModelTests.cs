using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Quantization;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Quantization;

public class QuantizedModelTests
{
    internal static string QuantizedTiny(Nf4Options? o = null)
    {
        string dir = Path.Combine(TestPaths.TempDir(), "q");
        ModelQuantizer.QuantizeFolder(TestPaths.TinyLlama, dir, o ?? new Nf4Options());
        return dir;
    }

    /// <summary>A plain dense folder whose weights are the quantised model's dequantised ones (config from <paramref name="configDir"/>, default the tiny Llama's).</summary>
    internal static string DequantizedFolder(CausalLM q, string? configDir = null)
    {
        string dir = TestPaths.TempDir();
        using var scope = NewDisposeScope();
        var tensors = q.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).ToList();
        tensors.AddRange(q.Linears().Where(l => l.Quantized is not null).Select(l => (l.ModulePath + ".weight", l.DenseWeight(ScalarType.Float32))));
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors);
        File.Copy(Path.Combine(configDir ?? TestPaths.TinyLlama, "config.json"), Path.Combine(dir, "config.json"));
        return dir;
    }

    static Tensor GoldenIds()
    {
        using var g = new SafeTensorsFile(Path.Combine(TestPaths.TinyLlama, "golden.safetensors"));
        return g.Load("input_ids");
    }

    [Fact]
    public void QuantisedFolderLoadsWithBnbLayoutAndItsLogitsEqualTheDequantisedDenseModel()
    {
        string dir = QuantizedTiny();
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!["quantization_config"]!;
        Assert.Equal("bitsandbytes", (string?)cfg["quant_method"]);
        Assert.True((bool)cfg["load_in_4bit"]!);
        Assert.Equal("nf4", (string?)cfg["bnb_4bit_quant_type"]);
        Assert.True((bool)cfg["bnb_4bit_use_double_quant"]!);
        Assert.True(File.Exists(Path.Combine(dir, "tokenizer.json")));
        using (var f = new SafeTensorsFile(Path.Combine(dir, "model.safetensors")))
        {
            var packed = f.Info("model.layers.0.self_attn.q_proj.weight");
            Assert.Equal("U8", packed.Dtype);
            Assert.Equal(new long[] { 64 * 64 / 2, 1 }, packed.Shape);
            Assert.Equal("U8", f.Info("model.layers.0.self_attn.q_proj.weight.absmax").Dtype);
            Assert.Equal(new long[] { 256 }, f.Info("model.layers.0.self_attn.q_proj.weight.nested_quant_map").Shape);
            Assert.Equal("F32", f.Info("lm_head.weight").Dtype);
            Assert.Equal("F32", f.Info("model.embed_tokens.weight").Dtype);
            var json = System.Text.Encoding.UTF8.GetString(f.RawBytes("model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4"));
            var qs = JsonNode.Parse(json)!;
            Assert.Equal(64, (int)qs["blocksize"]!);
            Assert.Equal(256, (int)qs["nested_blocksize"]!);
            Assert.Equal("float32", (string?)qs["dtype"]);
        }

        using var q = ModelLoader.Load(dir);
        Assert.Equal("nf4-b64-dq", q.QuantizationScheme);
        Assert.All(q.Linears().Where(l => l.ModulePath != "lm_head"), l => Assert.IsType<Nf4Weight>(l.Quantized));
        Assert.NotNull(q.lm_head!.weight);
        using var dense = ModelLoader.Load(DequantizedFolder(q));
        using var original = ModelLoader.Load(TestPaths.TinyLlama);
        using var ids = GoldenIds();
        using var _ = no_grad();
        using var lq = q.Forward(ids);
        using var ld = dense.Forward(ids);
        using var lo = original.Forward(ids);
        Assert.True(TestPaths.MaxAbsError(lq, ld) <= 1e-5, $"max abs {TestPaths.MaxAbsError(lq, ld)}");
        double vsOriginal = TestPaths.RelativeError(lq, lo);
        Assert.InRange(vsOriginal, 1e-4, 0.5);

        // QLoRA at step 0 (B = 0): still the dequantised base.
        TestLora.Attach(q, zeroB: true);
        using var la = q.Forward(ids);
        Assert.True(TestPaths.MaxAbsError(la, ld) <= 1e-5);
    }

    [Fact]
    public void QuantisingWhileLoadingGivesTheSameCodesAsTheSavedFolder()
    {
        string dir = QuantizedTiny();
        using var fromFolder = ModelLoader.Load(dir);
        using var onLoad = ModelLoader.Load(TestPaths.TinyLlama, new LoadOptions { Quantizer = new Nf4Quantizer() });
        Assert.Equal("nf4-b64-dq", onLoad.QuantizationScheme);
        foreach (var (a, b) in fromFolder.Linears().Zip(onLoad.Linears()).Where(p => p.First.Quantized is not null))
        {
            var (wa, wb) = ((Nf4Weight)a.Quantized!, (Nf4Weight)b.Quantized!);
            Assert.Equal(wa.Packed.bytes.ToArray(), wb.Packed.bytes.ToArray());
            Assert.Equal(wa.AbsmaxFloats(), wb.AbsmaxFloats());
        }
    }

    [Fact]
    public void Fp4WithoutDoubleQuantRoundTripsThroughTheFolder()
    {
        string dir = QuantizedTiny(new Nf4Options(128, DoubleQuant: false, FourBitType.Fp4));
        var info = QuantizationInfo.Describe(dir);
        Assert.Equal(("fp4-b128", 14), (info.Scheme, info.QuantizedTensors));
        Assert.Equal(4 + 32.0 / 128, info.BitsPerWeight, 6);
        using var q = ModelLoader.Load(dir);
        using var onLoad = ModelLoader.Load(TestPaths.TinyLlama, new LoadOptions { Quantizer = new Nf4Quantizer(new Nf4Options(128, false, FourBitType.Fp4)) });
        using var ids = GoldenIds();
        using var _ = no_grad();
        using var a = q.Forward(ids);
        using var b = onLoad.Forward(ids);
        Assert.Equal(0.0, TestPaths.MaxAbsError(a, b));
    }

    [Fact]
    public void InspectReportsSchemeAndBitsPerWeight()
    {
        var info = QuantizationInfo.Describe(QuantizedTiny());
        Assert.Equal(("nf4-b64-dq", 64, true, 14), (info.Scheme, info.BlockSize, info.DoubleQuant, info.QuantizedTensors));
        Assert.Equal(2L * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 176), info.QuantizedWeights);
        Assert.InRange(info.BitsPerWeight, 4.125, 4.2); // tiny layers: one partly filled nested block each
        Assert.True(info.BitsPerWeightWithTables > info.BitsPerWeight);
        Assert.Equal("none", QuantizationInfo.Describe(TestPaths.TinyLlama).Scheme);
    }
}
