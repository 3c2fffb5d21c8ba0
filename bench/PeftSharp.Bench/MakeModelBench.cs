using System.Text.Json.Nodes;
using PeftSharp.IO;

namespace PeftSharp.Bench;

/// <summary>
/// Writes a random Llama-, Gemma-2- or Qwen3-shaped fp32 checkpoint folder without ever holding a tensor: each tensor's bytes
/// are generated in 1 MiB chunks as the writer streams them. Input for bench/quantize-memory.sh.
/// </summary>
public sealed class MakeModelBench : IBench
{
    public string Name => "make-model";
    public string Description => "write a random fp32 Llama, Gemma 2 or Qwen3 checkpoint (--out DIR --hidden --intermediate --layers --heads --kv-heads --vocab --type llama|gemma2|qwen3 --softcap C --final-softcap C, 0 = none --head-dim D for qwen3)";

    public int Run(string[] argv)
    {
        var a = new BenchArgs(argv);
        string dir = a.Get("out", "");
        if (dir == "") throw new ArgumentException("--out is required");
        int h = a.Int("hidden", 1024), inter = a.Int("intermediate", 2816), layers = a.Int("layers", 12), heads = a.Int("heads", 16), vocab = a.Int("vocab", 32000);
        int kvHeads = a.Int("kv-heads", heads);
        string type = a.Get("type", "llama");
        // --softcap / --final-softcap 0: the key set to null (no soft-capping), as a config.json switches it off.
        static JsonNode? Cap(double c) => c > 0 ? JsonValue.Create(c) : null;
        var config = type switch
        {
            "llama" => new JsonObject { ["architectures"] = new JsonArray("LlamaForCausalLM"), ["tie_word_embeddings"] = false },
            // Gemma 2 as its config.json spells it: soft-capped scores and logits, GeGLU, tied head; the score scale is
            // 1/sqrt(head_dim) so that the soft-cap alone decides the explicit attention path.
            "gemma2" => new JsonObject
            {
                ["architectures"] = new JsonArray("Gemma2ForCausalLM"), ["head_dim"] = h / heads, ["query_pre_attn_scalar"] = h / heads,
                ["attn_logit_softcapping"] = Cap(a.Double("softcap", 50.0)), ["final_logit_softcapping"] = Cap(a.Double("final-softcap", 30.0)), ["sliding_window"] = 4096,
                ["hidden_activation"] = "gelu_pytorch_tanh", ["tie_word_embeddings"] = true,
            },
            // Qwen3: per-head q/k norms; --head-dim sets a query width other than the hidden size, as Qwen3-0.6B has.
            "qwen3" => new JsonObject
            {
                ["architectures"] = new JsonArray("Qwen3ForCausalLM"), ["head_dim"] = a.Int("head-dim", h / heads), ["tie_word_embeddings"] = false,
            },
            _ => throw new ArgumentException($"--type: '{type}' is not llama, gemma2 or qwen3"),
        };
        config["model_type"] = type;
        config["hidden_size"] = h; config["intermediate_size"] = inter; config["num_hidden_layers"] = layers;
        config["num_attention_heads"] = heads; config["num_key_value_heads"] = kvHeads; config["vocab_size"] = vocab;
        config["rms_norm_eps"] = 1e-5; config["rope_theta"] = 10000.0; config["max_position_embeddings"] = 2048; config["torch_dtype"] = "float32";
        // The tensors the family's checkpoint holds, as the planner lists them (HF names and shapes).
        var shapes = new List<(string, long[])>();
        foreach (var m in Memory.ModelShape.FromConfig(Memory.ModelConfig.FromJson(config)).Modules.Where(m => !m.Tied))
        {
            shapes.Add(($"{m.Name}.weight", m.Kind switch
            {
                Memory.ModuleKind.Linear => [m.Out, m.In],
                Memory.ModuleKind.Embedding => [m.In, m.Out],
                _ => [m.Out],
            }));
            if (m.Bias) shapes.Add(($"{m.Name}.bias", [m.Out]));
        }
        // Norm weights scale by 1 (Gemma's norms multiply by 1 + w).
        float normWeight = type == "gemma2" ? 0f : 1f;
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
                        buf[i] = norm ? normWeight : ((state >> 40) / (float)(1 << 24) - 0.5f) * 0.08f;
                    }
                    st.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(buf.AsSpan(0, len)));
                }
            });
        }).ToList();
        Directory.CreateDirectory(dir);
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), entries, new Dictionary<string, string> { ["format"] = "pt" });
        AtomicFile.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        long total = shapes.Sum(s => s.Item2.Aggregate(1L, (x, y) => x * y));
        long largest = shapes.Max(s => s.Item2.Aggregate(1L, (x, y) => x * y));
        Console.WriteLine($"{{\"params\": {total}, \"largest_tensor_fp32_bytes\": {largest * 4}}}");
        return 0;
    }
}
