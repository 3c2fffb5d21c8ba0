using PeftSharp.IO.Gguf;
using PeftSharp.Tests.Support;

namespace PeftSharp.Tests.IO.Gguf;

/// <summary>
/// `peft export gguf` on bad input: one line naming the file or flag and the cause, exit 1, no output file left.
/// And the metadata a user's runtime relies on (architecture keys, tokenizer, Q/K permutation of the stored rows).
/// </summary>
[Collection("console")]
public class ExportGgufCliTests
{
    static (int Code, string Err, string Out) Export(params string[] args)
    {
        var (code, _, err) = CliCapture.Run(["export", "gguf", .. args]);
        return (code, err.Trim(), args.SkipWhile(a => a != "--out").Skip(1).First());
    }

    /// <summary>What llama.cpp cannot run as the engine does is refused up front, naming config.json and the cause.</summary>
    [Fact]
    public void UnsupportedArchitectureIsRefusedBeforeAnythingIsWritten()
    {
        void AssertRefused(System.Text.Json.Nodes.JsonObject cfg, string cause)
        {
            string dir = RandomModel.Write(cfg);
            File.Copy(Path.Combine(TestPaths.TinyLlama, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
            var (code, err, outPath) = Export("--model", dir, "--out", Path.Combine(TestPaths.TempDir(), "x.gguf"), "--type", "q4_K_M");
            Assert.Equal(1, code);
            Assert.Equal($"error: {Path.Combine(dir, "config.json")}: {cause}", err);
            Assert.Empty(Directory.GetFileSystemEntries(Path.GetDirectoryName(outPath)!));
        }
        AssertRefused(RandomModel.Phi3Config(longRope: true), "rope_scaling type 'longrope' cannot be exported to GGUF yet (supported: llama3)");
        AssertRefused(RandomModel.Gemma2Config(), "query_pre_attn_scalar gives attention scale 0.204124, but llama.cpp's gemma2 uses 0.25 (1/sqrt(head_dim)); GGUF export refused");
        var qwen = RandomModel.LlamaConfig(modelType: "qwen2");
        qwen["use_sliding_window"] = true;
        AssertRefused(qwen, "sliding-window attention (use_sliding_window) cannot be exported to GGUF: llama.cpp's qwen2 has none");

        // A model_type the engine does not load at all: the config loader's own error, naming the file.
        string other = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(other, "config.json"), """{"model_type": "gpt_neox", "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 64, "vocab_size": 50}""");
        var (c2, e2, o2) = Export("--model", other, "--out", Path.Combine(TestPaths.TempDir(), "y.gguf"));
        Assert.Equal(1, c2);
        Assert.StartsWith($"error: {Path.Combine(other, "config.json")}: unsupported model_type 'gpt_neox'", e2);
        Assert.Single(e2.Split('\n'));
        Assert.Empty(Directory.GetFileSystemEntries(Path.GetDirectoryName(o2)!));
    }

    [Fact]
    public void MissingTokenizerAndBadTypeAreClearErrors()
    {
        string dir = RandomModel.Write(RandomModel.LlamaConfig());
        string outDir = TestPaths.TempDir();
        var (code, err, _) = Export("--model", dir, "--out", Path.Combine(outDir, "x.gguf"));
        Assert.Equal(1, code);
        Assert.Contains("tokenizer.json", err);
        Assert.Single(err.Split('\n'));
        Assert.Empty(Directory.GetFileSystemEntries(outDir));

        (code, err, _) = Export("--model", TestPaths.TinyLlama, "--out", Path.Combine(outDir, "x.gguf"), "--type", "q3_k");
        Assert.Equal(1, code);
        Assert.Contains("--type 'q3_k' is not supported (supported: f32, f16, bf16, q8_0, q4_0, q4_K_M)", err);
        Assert.Single(err.Split('\n'));
        Assert.Empty(Directory.GetFileSystemEntries(outDir));
    }

    [Fact]
    public void LlamaMetadataTokenizerAndPermutation()
    {
        string path = Path.Combine(TestPaths.TempDir(), "tiny.gguf");
        Assert.Equal(0, Export("--model", TestPaths.TinyLlama, "--out", path, "--type", "f32").Code);
        using var r = new GgufReader(path);
        Assert.Equal("llama", r.GetString("general.architecture"));
        Assert.Equal(2ul, r.GetUInt("llama.block_count"));
        Assert.Equal(4ul, r.GetUInt("llama.attention.head_count"));
        Assert.Equal(2ul, r.GetUInt("llama.attention.head_count_kv"));
        Assert.Equal(16ul, r.GetUInt("llama.rope.dimension_count"));
        Assert.Equal("gpt2", r.GetString("tokenizer.ggml.model"));
        Assert.Equal("gpt-2", r.GetString("tokenizer.ggml.pre"));
        var tokens = (string[])r.Get("tokenizer.ggml.tokens").Value;
        Assert.Equal(260, tokens.Length);
        Assert.Equal("<|endoftext|>", tokens[259]);
        Assert.Equal(3, ((int[])r.Get("tokenizer.ggml.token_type").Value)[259]); // control
        Assert.Equal(259ul, r.GetUInt("tokenizer.ggml.eos_token_id"));
        Assert.Equal(false, r.Get("tokenizer.ggml.add_bos_token").Value);
        Assert.NotEmpty((string[])r.Get("tokenizer.ggml.merges").Value);
        Assert.Contains(r.Tensors, t => t.Name == "output.weight"); // untied
        // k_proj rows are stored permuted (llama.cpp's rope pairs adjacent rows); v_proj rows are not.
        using var st = new PeftSharp.IO.SafeTensorsFile(Path.Combine(TestPaths.TinyLlama, "model.safetensors"));
        using var k = st.Load("model.layers.0.self_attn.k_proj.weight").to(TorchSharp.torch.ScalarType.Float32);
        using var v = st.Load("model.layers.0.self_attn.v_proj.weight").to(TorchSharp.torch.ScalarType.Float32);
        using var kPermuted = GgufModelExport.PermuteRows(k, 2);
        float[] Stored(string name) => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(r.ReadBytes(name)).ToArray();
        Assert.Equal(kPermuted.data<float>().ToArray(), Stored("blk.0.attn_k.weight"));
        Assert.NotEqual(k.data<float>().ToArray(), Stored("blk.0.attn_k.weight"));
        Assert.Equal(v.data<float>().ToArray(), Stored("blk.0.attn_v.weight"));
    }
}
