using System.Text.Json.Nodes;
using PeftSharp.IO;

namespace PeftSharp.Bench;

/// <summary>
/// Writes a random Llama-shaped fp32 checkpoint folder without ever holding a tensor: each tensor's bytes
/// are generated in 1 MiB chunks as the writer streams them. Input for bench/quantize-memory.sh.
/// </summary>
public sealed class MakeModelBench : IBench
{
    public string Name => "make-model";
    public string Description => "write a random fp32 Llama checkpoint (--out DIR --hidden --intermediate --layers --heads --vocab)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        string dir = a.Get("out", "");
        if (dir == "") throw new ArgumentException("--out is required");
        int h = a.Int("hidden", 1024), inter = a.Int("intermediate", 2816), layers = a.Int("layers", 12), heads = a.Int("heads", 16), vocab = a.Int("vocab", 32000);
        var shapes = new List<(string, long[])> { ("model.embed_tokens.weight", [vocab, h]), ("model.norm.weight", [h]), ("lm_head.weight", [vocab, h]) };
        for (int i = 0; i < layers; i++)
        {
            string p = $"model.layers.{i}";
            foreach (var n in new[] { "q_proj", "k_proj", "v_proj", "o_proj" }) shapes.Add(($"{p}.self_attn.{n}.weight", [h, h]));
            shapes.Add(($"{p}.mlp.gate_proj.weight", [inter, h]));
            shapes.Add(($"{p}.mlp.up_proj.weight", [inter, h]));
            shapes.Add(($"{p}.mlp.down_proj.weight", [h, inter]));
            shapes.Add(($"{p}.input_layernorm.weight", [h]));
            shapes.Add(($"{p}.post_attention_layernorm.weight", [h]));
        }
        ulong state = 0x9E3779B97F4A7C15;
        var entries = shapes.Select(s =>
        {
            long n = s.Item2.Aggregate(1L, (x, y) => x * y);
            bool norm = s.Item2.Length == 1;
            return new SafeTensorEntry(s.Item1, "F32", s.Item2, n * 4, st =>
            {
                var buf = new float[1 << 18];
                for (long done = 0; done < n; done += buf.Length)
                {
                    int len = (int)Math.Min(buf.Length, n - done);
                    for (int i = 0; i < len; i++)
                    {
                        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                        buf[i] = norm ? 1f : ((state >> 40) / (float)(1 << 24) - 0.5f) * 0.08f;
                    }
                    st.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(buf.AsSpan(0, len)));
                }
            });
        }).ToList();
        Directory.CreateDirectory(dir);
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), entries, new Dictionary<string, string> { ["format"] = "pt" });
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"), ["model_type"] = "llama", ["hidden_size"] = h, ["intermediate_size"] = inter,
            ["num_hidden_layers"] = layers, ["num_attention_heads"] = heads, ["num_key_value_heads"] = heads, ["vocab_size"] = vocab,
            ["rms_norm_eps"] = 1e-5, ["rope_theta"] = 10000.0, ["max_position_embeddings"] = 2048, ["tie_word_embeddings"] = false, ["torch_dtype"] = "float32",
        };
        AtomicFile.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        long total = shapes.Sum(s => s.Item2.Aggregate(1L, (x, y) => x * y));
        long largest = shapes.Max(s => s.Item2.Aggregate(1L, (x, y) => x * y));
        Console.WriteLine($"{{\"params\": {total}, \"largest_tensor_fp32_bytes\": {largest * 4}}}");
        return 0;
    }
}
