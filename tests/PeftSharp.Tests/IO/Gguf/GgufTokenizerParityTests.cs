using PeftSharp.Models;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;

namespace PeftSharp.Tests.IO.Gguf;

/// <summary>
/// The tokenizer metadata of `peft export gguf`, checked by llama.cpp's own tokenizer: for real published tokenizers
/// (Llama 2 / TinyLlama and Mistral sentencepiece-style BPE, SmolLM and Qwen2.5 byte-level BPE) on a tiny random
/// model of the same vocabulary, llama.cpp encodes texts to the ids Hugging Face's tokenizer(text) gives, BOS included.
/// </summary>
[Collection("console")]
public class GgufTokenizerParityTests(ITestOutputHelper output)
{
    static readonly string[] Texts =
    [
        "Hello world", " leading space and  double  spaces", "Numbers 12345 and 3.14159", "new\nlines\n\n and\ttabs",
        "Unicode: café naïve 東京 🚀", "don't won't it's", "x",
    ];

    [Theory]
    [InlineData("tinyllama-chat-tokenizer", "tokenizer.json", "llama")]
    [InlineData("mistral-7b-instruct-v0.1-tokenizer", "tokenizer.json", "llama")]
    [InlineData("smollm135m-medflash-lora", "tokenizer.json", "llama")]
    [InlineData("qwen25-05b-instruct-lora", "tokenizer.reconstructed.json", "qwen2")]
    public void LlamaCppTokenizesLikeHuggingFace(string fixture, string tokenizerFile, string modelType)
    {
        if (ExportWithRealTokenizer(fixture, tokenizerFile, modelType, output) is not { } made) return;
        var (dir, gguf) = made;

        // The chat template travels as tokenizer.chat_template (Ollama and llama.cpp's chat modes read it).
        using (var r = new PeftSharp.IO.Gguf.GgufReader(gguf))
        {
            var template = PeftSharp.Chat.ChatTemplate.Load(dir);
            if (template is null) Assert.False(r.Metadata.ContainsKey("tokenizer.chat_template"));
            else Assert.Equal(template.Text, r.GetString("tokenizer.chat_template"));
        }
        using var hf = new TextTokenizer(Path.Combine(dir, "tokenizer.json"), ModelConfig.Load(dir));
        using var cpp = new LlamaCpp(gguf, 64);
        // Mistral's tokenizer.json (Metaspace, prepend_scheme "first") adds no "▁" before a text that starts with a
        // space; llama.cpp's sentencepiece path always adds one (add_space_prefix), as sentencepiece itself does.
        bool metaspaceFirst = fixture.StartsWith("mistral", StringComparison.Ordinal);
        foreach (var text in Texts.Where(t => !(metaspaceFirst && t.StartsWith(' '))))
            Assert.True(hf.Encode(text, addSpecialTokens: true).SequenceEqual(cpp.Tokenize(text)),
                $"'{text}': HF [{string.Join(",", hf.Encode(text, true))}] llama.cpp [{string.Join(",", cpp.Tokenize(text))}]");
    }

    /// <summary>
    /// A tiny random model carrying a real tokenizer fixture (its tokenizer.json and configs), exported by `peft export gguf`
    /// as f16; null (reason printed) when ../shared is absent.
    /// </summary>
    internal static (string Dir, string Gguf)? ExportWithRealTokenizer(string fixture, string tokenizerFile, string modelType, ITestOutputHelper output)
    {
        string? src = RealFixtures.Folder(fixture, output);
        if (src is null) return null;
        string dir = TestPaths.TempDir();
        File.Copy(Path.Combine(src, tokenizerFile), Path.Combine(dir, "tokenizer.json"));
        foreach (var f in new[] { "tokenizer_config.json", "special_tokens_map.json" })
            if (File.Exists(Path.Combine(src, f))) File.Copy(Path.Combine(src, f), Path.Combine(dir, f));
        int vocab;
        using (var probe = new TextTokenizer(Path.Combine(dir, "tokenizer.json"))) vocab = probe.VocabSize;
        var cfg = RandomModel.LlamaConfig(hidden: 32, layers: 1, heads: 4, kvHeads: 2, vocab: vocab, intermediate: 32, modelType: modelType);
        cfg.Remove("eos_token_id");
        RandomModel.Write(cfg, dir: dir);
        string gguf = Path.Combine(dir, "model.gguf");
        var (code, _, err) = CliCapture.Run("export", "gguf", "--model", dir, "--out", gguf, "--type", "f16");
        Assert.True(code == 0, err);
        return (dir, gguf);
    }
}
