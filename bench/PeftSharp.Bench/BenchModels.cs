using System.Text.Json.Nodes;
using PeftSharp.Demo;
using PeftSharp.Models;
using PeftSharp.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Bench;

/// <summary>Random Llama-shaped models built in memory, with the same shapes as the PyTorch peer script.</summary>
public static class BenchModels
{
    public static ModelConfig Config(int vocab, int hidden, int layers, int heads, int kvHeads, int intermediate = 0) =>
        ModelConfig.FromJson(new JsonObject
        {
            ["model_type"] = "llama", ["hidden_size"] = hidden,
            // Same default as the peer: int(8*h/3 // 64 * 64)
            ["intermediate_size"] = intermediate > 0 ? intermediate : (int)(8.0 * hidden / 3 / 64) * 64,
            ["num_hidden_layers"] = layers, ["num_attention_heads"] = heads, ["num_key_value_heads"] = kvHeads,
            ["vocab_size"] = vocab, ["rms_norm_eps"] = 1e-5, ["rope_theta"] = 10000.0, ["max_position_embeddings"] = 4096,
        });

    public static CausalLM Random(ModelConfig c, int seed = 0)
    {
        manual_seed(seed);
        var m = new CausalLM(c);
        DemoAssets.InitializeWeights(m);
        return m;
    }

    /// <summary>
    /// The same random model with every decoder projection in NF4 (bnb defaults: block 64, double quant; lm_head
    /// dense), built one dense weight at a time so the fp32 model never exists.
    /// </summary>
    public static CausalLM RandomNf4(ModelConfig c, int seed = 0)
    {
        manual_seed(seed);
        var m = new CausalLM(c, ScalarType.Float32, Nf4Quantizer.IsDecoderLinear);
        DemoAssets.InitializeWeights(m);
        using var _ = no_grad();
        foreach (var lin in m.Linears().Where(l => l.weight is null))
        {
            using var dense = empty(lin.OutFeatures, lin.InFeatures).normal_(0, 0.02);
            lin.SetQuantized(Nf4Weight.FromDense(dense, name: lin.ModulePath));
        }
        m.QuantizationScheme = new Nf4Options().Scheme;
        return m;
    }

    /// <summary>Bytes of the frozen base: dense parameters plus quantised storage.</summary>
    public static long BaseBytes(CausalLM m) =>
        m.parameters().Sum(p => p.numel() * p.ElementSize) + m.Linears().Sum(l => l.Quantized?.StorageBytes ?? 0);
}
