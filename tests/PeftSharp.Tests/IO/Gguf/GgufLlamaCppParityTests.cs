using PeftSharp.Generation;
using PeftSharp.IO.Gguf;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO.Gguf;

/// <summary>
/// `peft export gguf` checked by llama.cpp itself (LLamaSharp's native build): the exported file, run by llama.cpp,
/// gives PeftSharp's last-position logits (1e-4 relative, f32) and greedy continuation on the same prompt ids; q8_0
/// agrees on the top-1 token. Base, and base with a LoRA adapter merged (against `peft merge`'s folder).
/// </summary>
[Collection("console")]
public class GgufLlamaCppParityTests(ITestOutputHelper output)
{
    static readonly int[] TinyPrompt = [5, 17, 99, 42, 200, 7, 63, 11];

    string Export(string model, string type, params string[] extra)
    {
        string path = Path.Combine(TestPaths.TempDir(), $"model-{type}.gguf");
        var (code, _, err) = CliCapture.Run(["export", "gguf", "--model", model, "--out", path, "--type", type, .. extra]);
        Assert.True(code == 0, err);
        return path;
    }

    static (float[] Logits, List<int> Greedy) Ours(string modelDir, int[] prompt, int newTokens)
    {
        using var model = ModelLoader.Load(modelDir);
        float[] logits;
        using (no_grad())
        using (var ids = tensor(prompt.Select(i => (long)i).ToArray(), ScalarType.Int64).unsqueeze(0))
        using (var all = model.Forward(ids, lastOnly: true))
            logits = all[0, -1].data<float>().ToArray();
        var greedy = TextGenerator.Generate(model, prompt, new SamplingOptions { MaxNewTokens = newTokens }, []).ToList();
        return (logits, greedy);
    }

    void AssertParity(string modelDir, string gguf, int[] prompt, int newTokens = 12, double maxRelative = 1e-4)
    {
        var (ours, ourGreedy) = Ours(modelDir, prompt, newTokens);
        using var cpp = new LlamaCpp(gguf);
        var theirs = cpp.LastLogits(prompt);
        Assert.Equal(ours.Length, theirs.Length);
        double rel = RelativeError(theirs, ours);
        output.WriteLine($"{Path.GetFileName(gguf)}: last-position logits relative error {rel:E2}");
        Assert.True(rel < maxRelative, $"llama.cpp logits differ from PeftSharp's by {rel:E2} relative");
        Assert.Equal(ourGreedy, cpp.Greedy(prompt, newTokens));
    }

    static double RelativeError(float[] a, float[] b)
    {
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { num += (a[i] - (double)b[i]) * (a[i] - (double)b[i]); den += (double)b[i] * b[i]; }
        return Math.Sqrt(num / den);
    }

    [Fact]
    public void TinyLlamaF32_MatchesPeftSharp()
    {
        AssertParity(TestPaths.TinyLlama, Export(TestPaths.TinyLlama, "f32"), TinyPrompt);
    }

    [Fact]
    public void TinyLlamaWithMergedLora_MatchesPeftMerge()
    {
        string adapter = Path.Combine(TestPaths.TinyLlama, "adapters", "lora");
        string merged = Path.Combine(TestPaths.TempDir(), "merged");
        var (code, _, err) = CliCapture.Run("merge", "--model", TestPaths.TinyLlama, "--adapter", adapter, "--out", merged);
        Assert.True(code == 0, err);
        string gguf = Export(TestPaths.TinyLlama, "f32", "--adapter", adapter);
        AssertParity(merged, gguf, TinyPrompt);
        // The adapter really changed the model: the base GGUF's logits differ from the merged one's.
        using var baseCpp = new LlamaCpp(Export(TestPaths.TinyLlama, "f32"));
        using var mergedCpp = new LlamaCpp(gguf);
        Assert.True(RelativeError(baseCpp.LastLogits(TinyPrompt), mergedCpp.LastLogits(TinyPrompt)) > 1e-3);
    }

    [Fact]
    public void TinyLlamaWithMergedDora_MatchesPeftMerge()
    {
        // DoRA has no llama.cpp adapter form; merged, it is plain weights.
        string adapter = Path.Combine(TestPaths.TinyLlama, "adapters", "dora");
        string merged = Path.Combine(TestPaths.TempDir(), "merged");
        var (code, _, err) = CliCapture.Run("merge", "--model", TestPaths.TinyLlama, "--adapter", adapter, "--out", merged);
        Assert.True(code == 0, err);
        AssertParity(merged, Export(TestPaths.TinyLlama, "f32", "--adapter", adapter), TinyPrompt);
    }

    [Fact]
    public void Qwen2WithBiasesAndTiedEmbeddings_MatchesPeftSharp()
    {
        // Qwen2: q/k/v biases, no Q/K permutation, tied embeddings (no output.weight); GQA 4 heads over 2.
        var cfg = RandomModel.LlamaConfig(hidden: 64, heads: 4, kvHeads: 2, vocab: 260, intermediate: 96, modelType: "qwen2", tied: true);
        string dir = RandomModel.Write(cfg, seed: 3);
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        string gguf = Export(dir, "f32");
        using (var r = new GgufReader(gguf))
        {
            Assert.Equal("qwen2", r.GetString("general.architecture"));
            Assert.DoesNotContain(r.Tensors, t => t.Name == "output.weight");
            Assert.Contains(r.Tensors, t => t.Name == "blk.0.attn_q.bias");
        }
        AssertParity(dir, gguf, TinyPrompt);
    }

    [Fact]
    public void Llama3RopeScaling_WritesRopeFreqsAndMatches()
    {
        var cfg = RandomModel.LlamaConfig(hidden: 64, heads: 4, kvHeads: 2, vocab: 260, intermediate: 96);
        cfg["max_position_embeddings"] = 1024;
        // A short original context so the 8-token prompt's frequencies fall in all three llama3 bands.
        cfg["rope_scaling"] = new System.Text.Json.Nodes.JsonObject
        {
            ["rope_type"] = "llama3", ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 64,
        };
        cfg["rope_theta"] = 500000.0;
        string dir = RandomModel.Write(cfg, seed: 4);
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        string gguf = Export(dir, "f32");
        using (var r = new GgufReader(gguf))
        {
            var freqs = r.Tensor("rope_freqs.weight");
            Assert.Equal([8L], freqs.Shape);
            var f = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(r.ReadBytes("rope_freqs.weight")).ToArray();
            Assert.Equal(1f, f[0]);        // shortest wavelength: unscaled
            Assert.Equal(8f, f[^1]);       // longest: divided by the factor
        }
        AssertParity(dir, gguf, TinyPrompt);
    }

    [Theory]
    [InlineData("q8_0", 5e-2)]
    [InlineData("f16", 5e-3)]
    public void TinyLlamaQuantised_AgreesOnTopToken(string type, double maxRelative)
    {
        string gguf = Export(TestPaths.TinyLlama, type);
        var (ours, _) = Ours(TestPaths.TinyLlama, TinyPrompt, 1);
        using var cpp = new LlamaCpp(gguf);
        var theirs = cpp.LastLogits(TinyPrompt);
        double rel = RelativeError(theirs, ours);
        output.WriteLine($"{type}: last-position logits relative error {rel:E2}");
        Assert.Equal(LlamaCpp.ArgMax(ours), LlamaCpp.ArgMax(theirs));
        Assert.True(rel < maxRelative, $"{type}: {rel:E2} relative");
    }

    [Fact]
    public void RealTinyStories_F32AndQ8_0_MatchPeftSharp()
    {
        string? dir = RealFixtures.Folder("tinystories-260k/hf", output);
        if (dir is null) return;
        using var tok = new TextTokenizer(Path.Combine(dir, "tokenizer.json"), ModelConfig.Load(dir));
        int[] prompt = tok.Encode("Lily and Tom were", addSpecialTokens: true);
        string f32 = Export(dir, "f32");
        AssertParity(dir, f32, prompt, newTokens: 24);
        // llama.cpp reads the tokenizer metadata as HF encodes: same ids for the same text.
        using (var cpp = new LlamaCpp(f32)) Assert.Equal(prompt, cpp.Tokenize("Lily and Tom were"));
        var (ours, _) = Ours(dir, prompt, 1);
        using var q8 = new LlamaCpp(Export(dir, "q8_0"));
        Assert.Equal(LlamaCpp.ArgMax(ours), LlamaCpp.ArgMax(q8.LastLogits(prompt)));
    }

    /// <summary>A tiny random model of <paramref name="family"/> with the fixture tokenizer (vocab 260).</summary>
    internal static string FamilyModel(string family)
    {
        var cfg = family switch
        {
            "qwen3" => RandomModel.Qwen3Config(),
            "phi3" => RandomModel.Phi3Config(),
            "gemma2" => RandomModel.Gemma2Config(),
            _ => RandomModel.LlamaConfig(modelType: family),
        };
        cfg["vocab_size"] = 260;
        cfg["eos_token_id"] = 259;
        // llama.cpp's gemma2 scales attention by 1/sqrt(head_dim) (see GgufModelExport.ArchitectureOf).
        if (family == "gemma2") cfg["query_pre_attn_scalar"] = cfg["head_dim"]!.GetValue<int>();
        string dir = RandomModel.Write(cfg, seed: 5);
        File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        return dir;
    }

    /// <summary>
    /// The families beyond llama/qwen2, each as llama.cpp runs it: mistral (llama architecture, Q/K permuted), qwen3
    /// (attn_q_norm/attn_k_norm, head_dim independent of hidden), phi3 (fused attn_qkv and gate+up in ffn_up, partial
    /// rotary), gemma2 (norms stored +1, post-attention/post-ffw norms, soft-capping, sliding window on even layers:
    /// the 8-token prompt is longer than its window of 4).
    /// </summary>
    [Theory]
    [InlineData("mistral")]
    [InlineData("qwen3")]
    [InlineData("phi3")]
    [InlineData("gemma2")]
    public void Family_F32_MatchesPeftSharp(string family)
    {
        string dir = FamilyModel(family);
        string gguf = Export(dir, "f32");
        using (var r = new GgufReader(gguf))
        {
            string arch = family == "mistral" ? "llama" : family;
            Assert.Equal(arch, r.GetString("general.architecture"));
            var names = r.Tensors.Select(t => t.Name).ToHashSet();
            switch (family)
            {
                case "qwen3": Assert.Contains("blk.0.attn_q_norm.weight", names); Assert.Contains("blk.0.attn_k_norm.weight", names); break;
                case "phi3": Assert.Contains("blk.0.attn_qkv.weight", names); Assert.DoesNotContain("blk.0.ffn_gate.weight", names); break;
                case "gemma2":
                    Assert.Contains("blk.0.post_attention_norm.weight", names);
                    Assert.Contains("blk.0.post_ffw_norm.weight", names);
                    Assert.Equal(4ul, r.GetUInt("gemma2.attention.sliding_window"));
                    break;
            }
        }
        // ggml's CPU GELU (gemma2's MLP) reads an fp16 table even in f32 (GGML_GELU_FP16 in ggml-cpu/vec.h): ~3e-4.
        AssertParity(dir, gguf, TinyPrompt, maxRelative: family == "gemma2" ? 1e-3 : 1e-4);
    }
}
