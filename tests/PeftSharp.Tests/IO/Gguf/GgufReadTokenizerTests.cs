using PeftSharp.Hub;
using PeftSharp.Models;
using PeftSharp.Tests.Support;
using Xunit.Abstractions;

namespace PeftSharp.Tests.IO.Gguf;

/// <summary>
/// The tokenizer rebuilt from a GGUF's metadata (what `--model FILE.gguf` tokenises with) gives the ids of the model's
/// Hugging Face tokenizer and of llama.cpp's own tokeniser on the same file, BOS included, and carries the chat
/// template: for our exports of real published tokenizers (sentencepiece-style TinyLlama/Mistral, byte-level SmolLM
/// and Qwen2.5) and for the real TinyStories GGUF made by llama.cpp's converter against its HF folder.
/// </summary>
[Collection("console")]
public class GgufReadTokenizerTests(ITestOutputHelper output)
{
    static readonly string[] Texts =
    [
        "Hello world", " leading space and  double  spaces", "Numbers 12345 and 3.14159", "new\nlines\n\n and\ttabs",
        "Unicode: café naïve 東京 🚀", "don't won't it's", "x", "Once upon a time, there was a little girl named Lily.",
    ];

    [Theory]
    [InlineData("tinyllama-chat-tokenizer", "tokenizer.json", "llama")]
    [InlineData("mistral-7b-instruct-v0.1-tokenizer", "tokenizer.json", "llama")]
    [InlineData("smollm135m-medflash-lora", "tokenizer.json", "llama")]
    [InlineData("qwen25-05b-instruct-lora", "tokenizer.reconstructed.json", "qwen2")]
    public void ExportedRealTokenizer_ReadBackEncodesLikeHfAndLlamaCpp(string fixture, string tokenizerFile, string modelType)
    {
        if (GgufTokenizerParityTests.ExportWithRealTokenizer(fixture, tokenizerFile, modelType, output) is not { } made) return;
        var (dir, gguf) = made;

        string view = ModelLocation.Resolve(gguf, "--model");
        using var hf = new TextTokenizer(Path.Combine(dir, "tokenizer.json"), ModelConfig.Load(dir));
        using var ours = TextTokenizer.FromFolder(view);
        using var cpp = new LlamaCpp(gguf, 64);
        // Mistral's tokenizer.json (Metaspace, prepend_scheme "first") adds no "▁" before a text that starts with a
        // space; the GGUF's sentencepiece form (llama.cpp, and this rebuild) always adds one.
        bool metaspaceFirst = fixture.StartsWith("mistral", StringComparison.Ordinal);
        foreach (var text in Texts)
        {
            var mine = ours.Encode(text, addSpecialTokens: true);
            Assert.True(mine.SequenceEqual(cpp.Tokenize(text)), $"'{text}': ours [{string.Join(",", mine)}] llama.cpp [{string.Join(",", cpp.Tokenize(text))}]");
            if (metaspaceFirst && text.StartsWith(' ')) continue;
            Assert.True(mine.SequenceEqual(hf.Encode(text, addSpecialTokens: true)), $"'{text}': ours [{string.Join(",", mine)}] HF [{string.Join(",", hf.Encode(text, true))}]");
            Assert.Equal(hf.Decode(hf.Encode(text)), ours.Decode(mine));
        }
        Assert.Equal(PeftSharp.Chat.ChatTemplate.Load(dir)?.Text, PeftSharp.Chat.ChatTemplate.Load(view)?.Text);
        Assert.Equal(hf.EosId, ours.EosId);
    }

    [Fact]
    public void RealTinyStoriesGguf_TokenizesLikeItsHfFolderAndLlamaCpp()
    {
        string? root = RealFixtures.Folder("tinystories-260k", output);
        if (root is null) return;
        string gguf = Path.Combine(root, "raw", "stories260K.gguf");
        using var ours = TextTokenizer.FromFolder(ModelLocation.Resolve(gguf, "--model"));
        using var hf = TextTokenizer.FromFolder(Path.Combine(root, "hf"));
        using var cpp = new LlamaCpp(gguf, 64);
        foreach (var text in Texts)
        {
            var mine = ours.Encode(text, addSpecialTokens: true);
            Assert.True(mine.SequenceEqual(hf.Encode(text, addSpecialTokens: true)), $"'{text}': ours [{string.Join(",", mine)}] HF [{string.Join(",", hf.Encode(text, true))}]");
            Assert.True(mine.SequenceEqual(cpp.Tokenize(text)), $"'{text}': ours [{string.Join(",", mine)}] llama.cpp [{string.Join(",", cpp.Tokenize(text))}]");
            Assert.Equal(hf.Decode(mine), ours.Decode(mine));
        }
    }
}
