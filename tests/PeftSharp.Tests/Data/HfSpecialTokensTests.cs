using System.Text.Json.Nodes;
using PeftSharp.Models;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Data;

/// <summary>
/// Encode(text, addSpecialTokens: true) gives exactly HF's tokenizer(text).input_ids: golden ids made with HF's
/// transformers.js on real tokenizers (Fixtures/text-goldens/encode-golden.json), and the add_bos_token /
/// add_eos_token rules of transformers on a tokenizer whose settings the test varies.
/// </summary>
public class HfSpecialTokensTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("tinyllama-chat")]
    [InlineData("mistral-7b-instruct-v0.1")]
    [InlineData("smollm-135m")]
    [InlineData("tinystories-260k")]
    [InlineData("llama-3.1")]
    [InlineData("qwen2.5")]   // add_bos_token false: no special tokens
    public void EncodeWithSpecialTokensEqualsHf(string name)
    {
        if (RealFixtures.Tokenizer(name, output) is not { } where) return;
        using var tok = RealFixtures.Load(where);
        foreach (var c in RealFixtures.Golden("encode-golden.json")[name]!.AsArray())
        {
            string text = c!["text"]!.GetValue<string>();
            int[] expected = c["ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
            Assert.True(expected.SequenceEqual(tok.Encode(text, addSpecialTokens: true)), $"{name}: '{text}' -> [{string.Join(",", tok.Encode(text, true))}], HF [{string.Join(",", expected)}]");
        }
    }

    [Fact]
    public void HelloWorldIsThreeIdsOnTinyLlamaWithBosFirst()
    {
        if (RealFixtures.Tokenizer("tinyllama-chat", output) is not { } where) return;
        using var tok = RealFixtures.Load(where);
        Assert.Equal([1, 15043, 3186], tok.Encode("Hello world", addSpecialTokens: true));
        Assert.Equal([15043, 3186], tok.Encode("Hello world"));
        Assert.Equal([1], tok.Encode("", addSpecialTokens: true));   // an empty text starts from BOS alone, as in HF
    }

    /// <summary>A copy of the TinyLlama tokenizer with tokenizer_config.json replaced (null: removed).</summary>
    static TextTokenizer TinyLlamaWith(string? config, string? postProcessor = null)
    {
        string src = RealFixtures.Folder("tinyllama-chat-tokenizer")!;
        string dir = TestPaths.TempDir();
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "tokenizer.json")))!.AsObject();
        if (postProcessor is not null) root["post_processor"] = JsonNode.Parse(postProcessor);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), root.ToJsonString());
        if (config is not null) File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), config);
        return new TextTokenizer(Path.Combine(dir, "tokenizer.json"));
    }

    [Fact]
    public void TokenizerConfigFlagsRebuildTheSpecialTokensAsTransformersDoes()
    {
        if (RealFixtures.Folder("tinyllama-chat-tokenizer", output) is null) return;
        int[] hello = [15043, 3186];
        // LlamaTokenizerFast rebuilds the post-processor from the flags: no BOS, EOS after.
        using (var t = TinyLlamaWith("""{"tokenizer_class":"LlamaTokenizer","add_bos_token":false,"add_eos_token":true,"bos_token":"<s>","eos_token":"</s>"}"""))
            Assert.Equal([.. hello, 2], t.Encode("Hello world", addSpecialTokens: true));
        // A Llama tokenizer without flags: add_bos_token defaults to true even when tokenizer.json adds nothing.
        using (var t = TinyLlamaWith("""{"tokenizer_class":"LlamaTokenizerFast","bos_token":{"content":"<s>","special":true}}""", postProcessor: "null"))
            Assert.Equal([1, .. hello], t.Encode("Hello world", addSpecialTokens: true));
        // Any other class without flags keeps tokenizer.json's post-processor (here, BOS).
        using (var t = TinyLlamaWith("""{"tokenizer_class":"PreTrainedTokenizerFast"}"""))
            Assert.Equal([1, .. hello], t.Encode("Hello world", addSpecialTokens: true));
        // ... and with no post-processor at all it adds nothing (the flags default to false).
        using (var t = TinyLlamaWith(null, postProcessor: "null"))
            Assert.Equal(hello, t.Encode("Hello world", addSpecialTokens: true));
        // Without special tokens the text's own ids, whatever the settings.
        using (var t = TinyLlamaWith("""{"tokenizer_class":"LlamaTokenizer","add_bos_token":false}"""))
            Assert.Equal(hello, t.Encode("Hello world"));
    }

    [Fact]
    public void MalformedFlagsNameTheFileAndField()
    {
        if (RealFixtures.Folder("tinyllama-chat-tokenizer", output) is null) return;
        var e = Assert.Throws<InvalidDataException>(() => TinyLlamaWith("""{"add_bos_token":"yes"}"""));
        Assert.Contains("tokenizer_config.json", e.Message);
        Assert.Contains("add_bos_token", e.Message);
        e = Assert.Throws<InvalidDataException>(() => TinyLlamaWith("""{"add_eos_token":true,"eos_token":"<nope>"}"""));
        Assert.Contains("eos_token", e.Message);
        Assert.Contains("<nope>", e.Message);
    }
}
