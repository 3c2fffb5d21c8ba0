using PeftSharp.Demo;
using PeftSharp.Models;

namespace PeftSharp.Tests.Data;

public class TextTokenizerTests
{
    [Fact]
    public void ByteLevelFixtureRoundTripsAndFindsEosFromConfig()
    {
        var tok = TextTokenizer.Load(TestPaths.TinyLlama);
        Assert.Equal(259, tok.EosId);
        Assert.Equal(260, tok.VocabSize);
        var ids = tok.Encode("hello world");
        // No special tokens are added: the fixture has no post-processor, byte-level BPE with no merges beyond "the".
        Assert.DoesNotContain(259, ids);
        Assert.Equal("hello world", tok.Decode(ids));
        Assert.Empty(tok.Encode(""));
    }

    [Fact]
    public void DemoWordLevelTokenizerRoundTripsCorpusText()
    {
        string dir = TestPaths.TempDir();
        DemoAssets.WriteData(dir);
        var tok = TextTokenizer.Load(Path.Combine(dir, "base"));
        Assert.Equal(0, tok.EosId);
        var text = string.Join(" ", new SyntheticCorpus().Documents(20, 5));
        var ids = tok.Encode(text);
        Assert.DoesNotContain(1, ids); // no <unk>: the corpus stays inside the vocabulary
        Assert.Equal(text.Split(' ').Length, ids.Length); // one token per space-separated word
        Assert.Equal(text, tok.Decode(ids));
        Assert.Equal("code red fox cup ->", tok.Decode(tok.Encode("code red fox cup ->")));
        Assert.Equal("seven", tok.Decode([.. tok.Encode("seven"), 0])); // EOS is skipped when decoding
        Assert.True(tok.VocabSize <= ModelConfig.Load(Path.Combine(dir, "base")).VocabSize);
    }

    [Fact]
    public void StopIdsAreEveryConfigEosIdAndTheTokenizersEos()
    {
        string dir = TestPaths.TempDir();
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(TestPaths.TinyLlama, "config.json")))!.AsObject();
        json["eos_token_id"] = new System.Text.Json.Nodes.JsonArray(257, 258);
        File.WriteAllText(Path.Combine(dir, "config.json"), json.ToJsonString());
        var config = ModelConfig.Load(dir);
        string tokenizer = Path.Combine(TestPaths.TinyLlama, "tokenizer.json");
        using (var withConfig = new TextTokenizer(tokenizer, config))
            Assert.Equal([257, 258], withConfig.StopIds(config).Order());
        using var withoutConfig = new TextTokenizer(tokenizer);   // EOS from the special token <|endoftext|>
        Assert.Equal([257, 258, 259], withoutConfig.StopIds(config).Order());
    }
}
