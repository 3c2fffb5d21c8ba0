using System.Text.Json.Nodes;
using PeftSharp.IO;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Support;

/// <summary>Writes small random HF model folders (config.json + safetensors) for architecture tests.</summary>
public static class RandomModel
{
    public static JsonObject LlamaConfig(int hidden = 32, int layers = 2, int heads = 4, int kvHeads = 2, int vocab = 50,
        int intermediate = 48, string modelType = "llama", bool tied = false) => new()
    {
        ["architectures"] = new JsonArray(modelType switch
        {
            "qwen2" => "Qwen2ForCausalLM", "qwen3" => "Qwen3ForCausalLM", "mistral" => "MistralForCausalLM",
            "phi3" => "Phi3ForCausalLM", "gemma2" => "Gemma2ForCausalLM", _ => "LlamaForCausalLM",
        }),
        ["model_type"] = modelType,
        ["hidden_size"] = hidden,
        ["intermediate_size"] = intermediate,
        ["num_hidden_layers"] = layers,
        ["num_attention_heads"] = heads,
        ["num_key_value_heads"] = kvHeads,
        ["vocab_size"] = vocab,
        ["max_position_embeddings"] = 256,
        ["rms_norm_eps"] = 1e-5,
        ["rope_theta"] = 10000.0,
        ["tie_word_embeddings"] = tied,
        ["torch_dtype"] = "float32",
        ["eos_token_id"] = vocab - 1,
    };

    /// <summary>A tiny Qwen3: head_dim 16 with hidden 32 (independent of hidden / heads), q/k norms.</summary>
    public static JsonObject Qwen3Config(bool tied = true)
    {
        var c = LlamaConfig(modelType: "qwen3", tied: tied);
        c["head_dim"] = 16;
        c["attention_bias"] = false;
        return c;
    }

    /// <summary>A tiny Phi-3: fused projections, partial rotary (Phi-4-mini style) and optionally longrope.</summary>
    public static JsonObject Phi3Config(bool longRope = false, double partialRotary = 0.75, int originalMax = 8)
    {
        var c = LlamaConfig(modelType: "phi3", hidden: 64, heads: 4, kvHeads: 2);   // head_dim 16, rotary 12
        c["partial_rotary_factor"] = partialRotary;
        c["hidden_act"] = "silu";
        if (longRope)
        {
            int n = (int)(16 * partialRotary) / 2;
            c["original_max_position_embeddings"] = originalMax;
            c["max_position_embeddings"] = originalMax * 32;
            c["rope_scaling"] = new JsonObject
            {
                ["type"] = "longrope",
                ["short_factor"] = new JsonArray(Enumerable.Range(0, n).Select(i => (JsonNode)(1.0 + 0.05 * i)).ToArray()),
                ["long_factor"] = new JsonArray(Enumerable.Range(0, n).Select(i => (JsonNode)(1.0 + 3.0 * i)).ToArray()),
            };
        }
        return c;
    }

    /// <summary>A tiny Gemma 2: window 4 on even layers, soft-capping, query_pre_attn_scalar != head_dim.</summary>
    public static JsonObject Gemma2Config(int layers = 3, int window = 4)
    {
        var c = LlamaConfig(modelType: "gemma2", layers: layers, tied: true);
        c["head_dim"] = 16;
        c["hidden_activation"] = "gelu_pytorch_tanh";
        c["query_pre_attn_scalar"] = 24;
        c["attn_logit_softcapping"] = 5.0;     // small caps so the tanh really bends tiny random logits
        c["final_logit_softcapping"] = 3.0;
        c["sliding_window"] = window;
        return c;
    }

    /// <summary>Random weights for every tensor the config implies, stored as <paramref name="dtype"/> (F32/BF16/F16).</summary>
    public static Dictionary<string, Tensor> Weights(JsonObject cfg, int seed)
    {
        var c = PeftSharp.Models.ModelConfig.FromJson(cfg);
        var g = new TorchSharp.torch.Generator((ulong)seed);
        var w = new Dictionary<string, Tensor>();
        Tensor R(params long[] shape) => randn(shape, generator: g).Times(0.2f);
        long h = c.HiddenSize, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim;
        w["model.embed_tokens.weight"] = R(c.VocabSize, h);
        for (int i = 0; i < c.NumLayers; i++)
        {
            string p = $"model.layers.{i}";
            if (c.FusedProjections) w[$"{p}.self_attn.qkv_proj.weight"] = R(q + 2 * kv, h);
            else
            {
                w[$"{p}.self_attn.q_proj.weight"] = R(q, h);
                w[$"{p}.self_attn.k_proj.weight"] = R(kv, h);
                w[$"{p}.self_attn.v_proj.weight"] = R(kv, h);
            }
            if (c.QkNorm)
            {
                w[$"{p}.self_attn.q_norm.weight"] = R(c.HeadDim).Plus(1L);
                w[$"{p}.self_attn.k_norm.weight"] = R(c.HeadDim).Plus(1L);
            }
            w[$"{p}.self_attn.o_proj.weight"] = R(h, q);
            if (c.QkvBias)
            {
                w[$"{p}.self_attn.q_proj.bias"] = R(q);
                w[$"{p}.self_attn.k_proj.bias"] = R(kv);
                w[$"{p}.self_attn.v_proj.bias"] = R(kv);
            }
            if (c.OBias) w[$"{p}.self_attn.o_proj.bias"] = R(h);
            if (c.FusedProjections) w[$"{p}.mlp.gate_up_proj.weight"] = R(2 * c.IntermediateSize, h);
            else
            {
                w[$"{p}.mlp.gate_proj.weight"] = R(c.IntermediateSize, h);
                w[$"{p}.mlp.up_proj.weight"] = R(c.IntermediateSize, h);
            }
            w[$"{p}.mlp.down_proj.weight"] = R(h, c.IntermediateSize);
            w[$"{p}.input_layernorm.weight"] = R(h).Plus(1L);
            w[$"{p}.post_attention_layernorm.weight"] = R(h).Plus(1L);
            if (c.GemmaBlock)
            {
                // Gemma norms scale by (1 + w): weights near 0 are the identity.
                w[$"{p}.input_layernorm.weight"] = R(h);
                w[$"{p}.post_attention_layernorm.weight"] = R(h);
                w[$"{p}.pre_feedforward_layernorm.weight"] = R(h);
                w[$"{p}.post_feedforward_layernorm.weight"] = R(h);
            }
        }
        w["model.norm.weight"] = R(h).Plus(1L);
        if (!c.TieWordEmbeddings) w["lm_head.weight"] = R(c.VocabSize, h);
        return w;
    }

    /// <summary>Writes a model folder; <paramref name="shards"/> > 1 writes model.safetensors.index.json shards.</summary>
    public static string Write(JsonObject cfg, int seed = 1, string dtype = "F32", int shards = 1, string? dir = null)
    {
        dir ??= TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        var st = dtype switch { "BF16" => ScalarType.BFloat16, "F16" => ScalarType.Float16, _ => ScalarType.Float32 };
        var weights = Weights(cfg, seed).Select(kv => (kv.Key, kv.Value.to_type(st))).ToList();
        if (shards == 1)
            SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), weights, new Dictionary<string, string> { ["format"] = "pt" });
        else
        {
            var map = new JsonObject();
            for (int s = 0; s < shards; s++)
            {
                string file = $"model-{s + 1:00000}-of-{shards:00000}.safetensors";
                var part = weights.Where((_, i) => i % shards == s).ToList();
                SafeTensorsWriter.Write(Path.Combine(dir, file), part);
                foreach (var (n, _) in part) map[n] = file;
            }
            File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map }.ToJsonString());
        }
        return dir;
    }
}
