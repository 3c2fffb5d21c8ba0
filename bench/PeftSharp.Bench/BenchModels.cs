using System.Text.Json.Nodes;
using PeftSharp.Models;
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
        using var _ = no_grad();
        foreach (var (name, p) in m.named_parameters())
            if (name.EndsWith("norm.weight")) p.fill_(1); else p.normal_(0, 0.02);
        return m;
    }
}
